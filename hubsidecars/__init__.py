"""Small pieces shared by the hub-sidecars services: layered configuration, logging, secrets."""
