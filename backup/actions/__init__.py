"""hub-backup's actions, one module each: what `run`, `cleanup`, `verify`, `drill`, `status`
and `restore` do to one chain (or report of all), given a backup.context.JobContext.
backup.jobs runs them over the chains under the job lock."""
