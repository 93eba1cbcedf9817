# Offline: this module has no provider, so `terraform test` renders it for real.
variables {
  agent_id           = "gcp-us-central1-1"
  cloud              = "gcp"
  region             = "us-central1"
  store_url          = "gs://ums-checkpoints-example/ums"
  nats_url           = "tls://nats-0.ums.example:4222,tls://nats-1.ums.example:4222"
  nats_ca_pem        = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
  command_verify_key = "MCowBQYDK2VwAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
  secrets            = { nats_credential = "ums-agent-gcp-us-central1-1-nats", project = "ums-example" }
  release_url        = "https://releases.example/ums-0.1.0.tgz"
  release_sha256     = "0000000000000000000000000000000000000000000000000000000000000000"
}

run "gcp_host_renders_its_environment" {
  command = plan
  assert {
    condition     = output.environment["UMS_AGENT_ID"] == "gcp-us-central1-1" && output.environment["UMS_CLOUD"] == "gcp"
    error_message = "the agent's identity must come from the inputs"
  }
  assert {
    condition     = !contains(keys(output.environment), "UMS_PAGE_RELAY_ADDRESS")
    error_message = "without page_relay_address the host must not claim post-copy"
  }
  assert {
    condition     = output.secret_environment == ["UMS_NATS_CREDENTIALS"]
    error_message = "a GCP host has only its broker credential as a secret"
  }
  assert {
    condition     = startswith(output.cloud_config, "#cloud-config\n") && strcontains(output.start_script, "secretmanager.googleapis.com/v1/projects/ums-example/secrets/$1/") && strcontains(output.start_script, "secret 'ums-agent-gcp-us-central1-1-nats'")
    error_message = "the start script must fetch the credential from Secret Manager"
  }
}

run "azure_host_fetches_its_storage_key" {
  command = plan
  variables {
    agent_id           = "azure-eastus-1"
    cloud              = "azure"
    region             = "eastus"
    store_url          = "azblob://umsckpt/checkpoints"
    secrets            = { nats_credential = "ums-agent-nats", storage_key = "ums-storage-key", vault = "ums-kv" }
    page_relay_address = "10.0.1.4"
  }
  assert {
    condition     = output.secret_environment == ["UMS_NATS_CREDENTIALS", "AZURE_STORAGE_KEY"]
    error_message = "an Azure host also fetches its storage key"
  }
  assert {
    condition     = strcontains(output.start_script, "https://ums-kv.vault.azure.net/secrets/$1") && !strcontains(output.start_script, "secretmanager.googleapis.com")
    error_message = "an Azure host must fetch from its Key Vault, and only there"
  }
  assert {
    condition     = output.environment["UMS_PAGE_RELAY_ADDRESS"] == "10.0.1.4"
    error_message = "page_relay_address must reach the agent"
  }
  assert {
    condition     = output.environment["UMS_PAGE_RELAY_PORTS"] == "7700-7715" && output.environment["UMS_PAGE_RELAY_LISTEN"] == "0.0.0.0"
    error_message = "the relay listens on the fixed ports the firewall opens, on the VM's own addresses"
  }
}

run "a_single_relay_port_is_spelt_as_one" {
  command = plan
  variables {
    page_relay_address = "10.0.1.4"
    page_relay_ports   = { from = 7700, to = 7700 }
  }
  assert {
    condition     = output.environment["UMS_PAGE_RELAY_PORTS"] == "7700"
    error_message = "one port is UMS_PAGE_RELAY_PORTS=7700"
  }
}

run "a_podman_host_gets_the_production_packages_only" {
  command = plan
  assert {
    condition     = strcontains(output.bootstrap_script, "UMS_ENGINE=podman bash \"$app/infra/host-setup.sh\"") && !can(regex("(?m)^[^#]*UMS_DEV_MACHINE", output.bootstrap_script)) && strcontains(output.unit, "Requires=podman.socket")
    error_message = "the host runs host-setup.sh for Podman, never as a development machine"
  }
  assert {
    condition     = output.environment["UMS_ENGINE"] == "podman" && output.environment["UMS_PODMAN_URL"] == "unix:///run/podman/podman.sock" && !contains(keys(output.environment), "UMS_DOCKER_SOCKET")
    error_message = "a Podman host's agent drives Podman's socket"
  }
}

run "a_docker_host_runs_dockerd_as_the_agent_needs_it" {
  command = plan
  variables {
    engine = "docker"
  }
  assert {
    condition     = output.environment["UMS_ENGINE"] == "docker" && output.environment["UMS_DOCKER_SOCKET"] == "unix:///run/docker.sock" && !contains(keys(output.environment), "UMS_PODMAN_URL")
    error_message = "a Docker host's agent drives dockerd's socket"
  }
  assert {
    condition     = strcontains(output.bootstrap_script, "UMS_ENGINE=docker bash \"$app/infra/host-setup.sh\"") && strcontains(output.bootstrap_script, "\"experimental\": true") && strcontains(output.bootstrap_script, "put /etc/criu/runc.conf") && strcontains(output.bootstrap_script, "tcp-established\nfile-locks") && !strcontains(output.bootstrap_script, "podman.socket")
    error_message = "the bootstrap installs docker.io, turns on experimental mode and writes runc's CRIU options"
  }
  assert {
    condition     = strcontains(output.unit, "Requires=docker.service") && !strcontains(output.unit, "podman")
    error_message = "the agent's unit waits for dockerd, not Podman"
  }
}

run "a_docker_host_takes_no_part_in_post_copy" {
  command = plan
  variables {
    engine             = "docker"
    page_relay_address = "10.0.1.4"
  }
  expect_failures = [output.cloud_config, output.boot_script]
}

run "credentials_in_a_store_url_are_refused" {
  command = plan
  variables {
    store_url = "gs://key:secret@bucket/ums"
  }
  expect_failures = [var.store_url]
}

run "a_plain_nats_url_is_refused" {
  command = plan
  variables {
    nats_url = "nats://nats.ums.example:4222"
  }
  expect_failures = [var.nats_url]
}

run "the_service_address_reaches_the_agent" {
  command = plan
  variables {
    service_address = "34.1.2.3"
  }
  assert {
    condition     = output.environment["UMS_SERVICE_ADDRESS"] == "34.1.2.3" && output.unit_name == "ums-agent"
    error_message = "service_address must reach the agent as UMS_SERVICE_ADDRESS"
  }
}

run "a_frontman_renders_its_own_unit_and_environment" {
  command = plan
  variables {
    agent_id           = null
    store_url          = null
    command_verify_key = null
    secrets            = { nats_credential = "ums-frontman-nats", project = "ums-example" }
    frontman = {
      id            = "frontman-1"
      services      = [{ container = "web", protocol = "http", listen = "0.0.0.0:80", port = 8080, hold_seconds = 20 }, { container = "db", protocol = "tcp", listen = "0.0.0.0:6379", port = 6379 }]
      drain_seconds = 3
    }
  }
  assert {
    condition     = output.unit_name == "ums-frontman" && strcontains(output.unit, "EnvironmentFile=/etc/ums/frontman.env") && strcontains(output.start_script, "exec /usr/bin/node /opt/ums/app/dist/frontman/main.js")
    error_message = "a frontman runs frontman/main.ts from its own unit"
  }
  assert {
    condition     = output.environment["UMS_FRONTMAN_ID"] == "frontman-1" && jsondecode(output.environment["UMS_FRONTMAN_SERVICES"]) == [{ container = "web", protocol = "http", listen = "0.0.0.0:80", port = 8080, holdSeconds = 20 }, { container = "db", protocol = "tcp", listen = "0.0.0.0:6379", port = 6379 }]
    error_message = "the services reach the frontman as the JSON frontman/main.ts parses"
  }
  assert {
    condition     = output.environment["UMS_FRONTMAN_DRAIN_SECONDS"] == "3" && !contains(keys(output.environment), "UMS_FRONTMAN_HOLD_SECONDS") && !contains(keys(output.environment), "UMS_AGENT_ID")
    error_message = "only the limits given are set, and nothing of the agent's"
  }
  assert {
    condition     = strcontains(output.cloud_config, "UMS_FRONTMAN_SERVICES=\"[{\\\"container\\\":\\\"web\\\"") && !strcontains(output.bootstrap_script, "bash \"$app/infra/host-setup.sh\"") && strcontains(output.bootstrap_script, "systemctl enable --now ums-frontman.service")
    error_message = "the environment file escapes the JSON's quotes; a frontman installs no container engine"
  }
  assert {
    condition     = output.secret_environment == ["UMS_NATS_CREDENTIALS"] && strcontains(output.start_script, "secret 'ums-frontman-nats'")
    error_message = "a frontman fetches its broker credential like a host"
  }
}

run "a_frontman_service_needs_a_known_protocol" {
  command = plan
  variables {
    frontman = { id = "frontman-1", services = [{ container = "web", protocol = "udp", listen = "0.0.0.0:53", port = 53 }] }
  }
  expect_failures = [var.frontman]
}

run "an_agent_needs_its_id" {
  command = plan
  variables {
    agent_id = null
  }
  expect_failures = [output.cloud_config, output.boot_script]
}
