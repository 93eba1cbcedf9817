locals {
  app_dir   = "/opt/ums/app"
  ca_file   = "/etc/ums/nats-ca.pem"
  state_dir = "/var/lib/ums/agent/${var.agent_id}"

  # What agents/main.ts and core/nats-event-bus.ts read (test/unit/terraform-static.test.ts derives that list
  # from the code and fails when they drift). Options left out on purpose, as the test lists too:
  # UMS_HOST_NETNS and UMS_VOLUMES_DIR (a simulated host of the local stack), UMS_ALLOWED_HTTP_ENDPOINTS
  # (local emulators only: real stores are https), UMS_KUBELET_* (orchestrator level, agents/kubelet/).
  environment = merge(
    {
      UMS_AGENT_ID             = var.agent_id
      UMS_CLOUD                = var.cloud
      UMS_REGION               = var.region
      UMS_STORE_URL            = var.store_url
      UMS_PODMAN_URL           = "unix:///run/podman/podman.sock"
      NATS_URL                 = var.nats_url
      UMS_NATS_CA              = local.ca_file
      UMS_COMMAND_VERIFY_KEY   = var.command_verify_key
      UMS_CHUNK_MIB            = tostring(var.chunk_mib)
      UMS_TRANSFER_PARALLEL    = tostring(var.transfer_parallel)
      UMS_IDLE_TIMEOUT_SECONDS = tostring(var.idle_timeout_seconds)
      UMS_LAUNCHER_DIR         = "/run/ums-launcher"
      UMS_STATE_DIR            = local.state_dir
      UMS_LOG_LEVEL            = var.log_level
    },
    var.page_relay_address == null ? {} : { UMS_PAGE_RELAY_ADDRESS = var.page_relay_address },
  )

  # Set by the start script from the secret manager: a path to a file on tmpfs for the credential (the
  # agent reads a file), the Azure storage key as a variable of the agent's process only.
  secret_environment = concat(["UMS_NATS_CREDENTIALS"], var.secrets.storage_key == null ? [] : ["AZURE_STORAGE_KEY"])

  # systemd EnvironmentFile syntax; values are quoted so spaces and commas survive.
  environment_file = join("", [for k in sort(keys(local.environment)) : "${k}=\"${local.environment[k]}\"\n"])

  agent_unit = templatefile("${path.module}/templates/ums-agent.service.tftpl", {
    app_dir = local.app_dir
  })

  start_script = templatefile("${path.module}/templates/ums-agent-start.sh.tftpl", {
    app_dir          = local.app_dir
    cloud            = var.cloud
    nats_credential  = var.secrets.nats_credential
    storage_key      = var.secrets.storage_key == null ? "" : var.secrets.storage_key
    secret_project   = var.secrets.project == null ? "" : var.secrets.project
    key_vault        = var.secrets.vault == null ? "" : var.secrets.vault
    aws_region       = var.cloud == "aws" ? var.region : ""
    credentials_path = "/run/ums-agent/nats-credential.json"
  })

  bootstrap_script = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    app_dir        = local.app_dir
    release_url    = var.release_url
    release_sha256 = var.release_sha256
  })

  files = [
    { path = "/etc/ums/agent.env", permissions = "0644", content = local.environment_file },
    { path = local.ca_file, permissions = "0644", content = var.nats_ca_pem },
    { path = "/etc/systemd/system/ums-agent.service", permissions = "0644", content = local.agent_unit },
    { path = "/usr/local/libexec/ums/ums-agent-start", permissions = "0755", content = local.start_script },
    { path = "/usr/local/libexec/ums/bootstrap", permissions = "0755", content = local.bootstrap_script },
  ]

  cloud_config = "#cloud-config\n${yamlencode({
    write_files = [for f in local.files : merge(f, { owner = "root:root" })]
    # The agent starts only once the bootstrap (Podman, CRIU check, release) succeeded.
    runcmd = [["/usr/local/libexec/ums/bootstrap"]]
  })}"

  # The same as a plain script, for images without cloud-init (GCE's Debian images run `startup-script`
  # metadata through the guest agent instead, at every boot: the bootstrap is idempotent). Contents travel
  # base64-encoded, so no content can end a heredoc or need quoting.
  boot_script = join("\n", concat(
    [
      "#!/usr/bin/env bash",
      "# UMS host boot (terraform/modules/agent-cloud-init): writes the agent's files, then runs the bootstrap.",
      "set -euo pipefail",
      "umask 022",
    ],
    flatten([for f in local.files : [
      "install -d -m 0755 '${dirname(f.path)}'",
      "printf '%s' '${base64encode(f.content)}' | base64 -d >'${f.path}'",
      "chmod ${f.permissions} '${f.path}'",
    ]]),
    ["exec /usr/local/libexec/ums/bootstrap", ""],
  ))
}
