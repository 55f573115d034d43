"""The one rule of hub-culler and hub-stats for "a user's server, whose, of which hub" (pure)."""

from __future__ import annotations

import pytest

from hubsidecars.usercontainers import (
    SWARMSPAWNER_NAMES,
    BadTemplate,
    NameMatcher,
    Owner,
    UserServers,
    hub_env,
)

HUB = "http://jupyterhub:8081/hub/api"
RULE = UserServers(SWARMSPAWNER_NAMES, SWARMSPAWNER_NAMES, hub_api_urls=(HUB,))


def env(user="carol", server="", url=HUB):
    return {"JUPYTERHUB_USER": user, "JUPYTERHUB_SERVER_NAME": server, "JUPYTERHUB_API_URL": url}


def test_this_hubs_server_is_ours_and_whose():
    verdict = RULE.judge("container", "jupyter-carol", env())
    assert verdict.ours and verdict.owner == Owner("carol", "")
    assert RULE.judge("container", "jupyter-carol", env(url=HUB + "/")).ours  # trailing slash


def test_another_hubs_server_is_not_ours_and_says_why():
    verdict = RULE.judge("container", "jupyter-carol", env(url="http://staging:8081/hub/api"))
    assert not verdict.ours
    assert "another hub's server" in verdict.reason and "staging" in verdict.reason
    assert not RULE.judge("container", "jupyter-carol", {"JUPYTERHUB_USER": "carol"}).ours


def test_without_a_hub_url_any_hubs_server_counts():
    rule = UserServers(SWARMSPAWNER_NAMES, SWARMSPAWNER_NAMES)
    assert rule.judge("service", "jupyter-carol-1", env(url="http://staging:8081/hub/api")).ours


def test_no_hub_user_is_no_hub_server_unless_pools_are_allowed():
    assert not RULE.judge("container", "jupyter-carol", {}).ours
    pools = UserServers(("pool-{any}",), (), require_hub_env=False, hub_api_urls=(HUB,))
    assert pools.judge("container", "pool-7", {}).ours


def test_a_swarm_task_is_judged_by_its_service():
    labels = {"com.docker.swarm.service.name": "jupyter-carol--lab"}
    verdict = RULE.container("jupyter-carol--lab.1.abcdef", labels, env(server="lab"))
    assert verdict.ours and verdict.owner == Owner("carol", "lab")
    assert not RULE.container("postgres.1.abcdef", {"com.docker.swarm.service.name": "postgres"},
                              env()).ours  # fmt: skip


def test_jhub_swarmspawner_names_are_candidates():
    # jupyter-{last 32 characters of the raw user name}-1, whatever the server
    assert RULE.candidate("service", "jupyter-Carol.Smith-1", {})
    assert not RULE.candidate("service", "jupyterhub", {})


@pytest.mark.parametrize("glob", ["jupyter-*", "jupyter-?", "jupyter-[ab]"])
def test_shell_globs_are_refused_with_a_hint(glob):
    with pytest.raises(BadTemplate, match="globs"):
        NameMatcher((glob,), ())


def test_hub_env_keeps_the_api_url_and_no_secret():
    kept = hub_env(["JUPYTERHUB_API_TOKEN=s3cret", f"JUPYTERHUB_API_URL={HUB}",
                    "JUPYTERHUB_USER=carol", "JPY_API_TOKEN=s3cret"])  # fmt: skip
    assert kept == {"JUPYTERHUB_API_URL": HUB, "JUPYTERHUB_USER": "carol"}
