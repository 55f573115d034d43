"""The Docker backend of hub-culler (--docker): users' containers and Swarm services."""
