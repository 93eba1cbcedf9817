locals {
  app_dir = "/opt/ums/app"
  ca_file = "/etc/ums/nats-ca.pem"

  # The component this VM runs: the host agent, or a frontman when var.frontman is set (the same install,
  # secret fetching and boot; another unit, environment and entry point).
  component = var.frontman == null ? "agent" : "frontman"
  unit_name = "ums-${local.component}"

  # What agents/main.ts and core/nats-event-bus.ts read (test/unit/terraform-static.test.ts derives that list
  # from the code and fails when they drift). Options left out on purpose, as the test lists too:
  # UMS_HOST_NETNS and UMS_VOLUMES_DIR (a simulated host of the local stack), UMS_ALLOWED_HTTP_ENDPOINTS
  # (local emulators only: real stores are https), UMS_KUBELET_* (orchestrator level, agents/kubelet/).
  agent_environment = merge(
    {
      UMS_AGENT_ID             = var.agent_id
      UMS_CLOUD                = var.cloud
      UMS_REGION               = var.region
      UMS_STORE_URL            = var.store_url
      UMS_ENGINE               = var.engine
      NATS_URL                 = var.nats_url
      UMS_NATS_CA              = local.ca_file
      UMS_COMMAND_VERIFY_KEY   = var.command_verify_key
      UMS_CHUNK_MIB            = tostring(var.chunk_mib)
      UMS_TRANSFER_PARALLEL    = tostring(var.transfer_parallel)
      UMS_IDLE_TIMEOUT_SECONDS = tostring(var.idle_timeout_seconds)
      UMS_LAUNCHER_DIR         = "/run/ums-launcher"
      UMS_STATE_DIR            = var.agent_id == null ? "" : "/var/lib/ums/agent/${var.agent_id}"
      UMS_LOG_LEVEL            = var.log_level
      # The host's cloud announces its end in its instance metadata: the evacuation acts on it (functions/evacuate-host.ts).
      UMS_NOTICES = var.notices ? "on" : "off"
    },
    var.max_upload_rate_mib == null ? {} : { UMS_MAX_UPLOAD_RATE = tostring(var.max_upload_rate_mib) },
    # The engine's API socket where the bootstrap starts it (Podman's podman.socket, Debian's docker.socket).
    var.engine == "podman" ? { UMS_PODMAN_URL = "unix:///run/podman/podman.sock" } : {},
    var.engine == "docker" ? { UMS_DOCKER_SOCKET = "unix:///run/docker.sock" } : {},
    # The relay is announced at the public address but listens on the VM's own (a public address is
    # translated, not on an interface), on the fixed ports the host module's firewall opens to the peers.
    var.page_relay_address == null ? {} : {
      UMS_PAGE_RELAY_ADDRESS = var.page_relay_address
      UMS_PAGE_RELAY_LISTEN  = var.page_relay_listen
      UMS_PAGE_RELAY_PORTS   = var.page_relay_ports.from == var.page_relay_ports.to ? tostring(var.page_relay_ports.from) : "${var.page_relay_ports.from}-${var.page_relay_ports.to}"
    },
    var.service_address == null ? {} : { UMS_SERVICE_ADDRESS = var.service_address },
  )

  # What frontman/main.ts and core/nats-event-bus.ts read (the same test derives it from frontman/main.ts).
  # UMS_FRONTMAN_SERVICES is the JSON frontman/main.ts parses (ServicesConfig); the limits are set only when
  # given, the code's defaults apply otherwise.
  frontman_environment = var.frontman == null ? {} : merge(
    {
      UMS_FRONTMAN_ID = var.frontman.id
      NATS_URL        = var.nats_url
      UMS_NATS_CA     = local.ca_file
      UMS_FRONTMAN_SERVICES = jsonencode([for s in var.frontman.services : merge(
        { container = s.container, protocol = s.protocol, listen = s.listen, port = s.port },
        s.hold_seconds == null ? {} : { holdSeconds = s.hold_seconds },
      )])
      UMS_LOG_LEVEL = var.log_level
    },
    var.frontman.hold_seconds == null ? {} : { UMS_FRONTMAN_HOLD_SECONDS = tostring(var.frontman.hold_seconds) },
    var.frontman.drain_seconds == null ? {} : { UMS_FRONTMAN_DRAIN_SECONDS = tostring(var.frontman.drain_seconds) },
    var.frontman.max_held == null ? {} : { UMS_FRONTMAN_MAX_HELD = tostring(var.frontman.max_held) },
    var.frontman.max_held_mib == null ? {} : { UMS_FRONTMAN_MAX_HELD_MIB = tostring(var.frontman.max_held_mib) },
    var.frontman.max_body_kib == null ? {} : { UMS_FRONTMAN_MAX_BODY_KIB = tostring(var.frontman.max_body_kib) },
  )

  environment = var.frontman == null ? local.agent_environment : local.frontman_environment

  # Set by the start script from the secret manager: a path to a file on tmpfs for the credential (the
  # agent reads a file), the Azure storage key as a variable of the agent's process only.
  secret_environment = concat(["UMS_NATS_CREDENTIALS"], var.secrets.storage_key == null ? [] : ["AZURE_STORAGE_KEY"])

  # systemd EnvironmentFile syntax; values are double-quoted so spaces and commas survive, and \ " $ `
  # escaped so JSON (UMS_FRONTMAN_SERVICES) survives too (systemd and a shell read it back the same).
  # (A null value is an agent's missing input: the outputs' preconditions say which.)
  environment_file = join("", [for k in sort(keys(local.environment)) : "${k}=\"${replace(coalesce(local.environment[k], "-"), "/([\\\\\"$`])/", "\\$1")}\"\n"])
  environment_path = "/etc/ums/${local.component}.env"

  unit = templatefile("${path.module}/templates/${local.unit_name}.service.tftpl", {
    app_dir = local.app_dir
    engine  = var.engine
  })

  start_script = templatefile("${path.module}/templates/ums-start.sh.tftpl", {
    app_dir          = local.app_dir
    unit_name        = local.unit_name
    entry            = "dist/${local.component == "agent" ? "agents" : "frontman"}/main.js"
    cloud            = var.cloud
    nats_credential  = var.secrets.nats_credential
    storage_key      = var.secrets.storage_key == null ? "" : var.secrets.storage_key
    secret_project   = var.secrets.project == null ? "" : var.secrets.project
    key_vault        = var.secrets.vault == null ? "" : var.secrets.vault
    aws_region       = var.cloud == "aws" ? var.region : ""
    credentials_path = "/run/${local.unit_name}/nats-credential.json"
  })

  bootstrap_script = templatefile("${path.module}/templates/bootstrap.sh.tftpl", {
    app_dir        = local.app_dir
    release_url    = var.release_url
    release_sha256 = var.release_sha256
    unit_name      = local.unit_name
    # The agent's host needs its container engine and CRIU (infra/host-setup.sh); a frontman only Node.
    engine = local.component == "agent" ? var.engine : ""
  })

  files = [
    { path = local.environment_path, permissions = "0644", content = local.environment_file },
    { path = local.ca_file, permissions = "0644", content = var.nats_ca_pem },
    { path = "/etc/systemd/system/${local.unit_name}.service", permissions = "0644", content = local.unit },
    { path = "/usr/local/libexec/ums/${local.unit_name}-start", permissions = "0755", content = local.start_script },
    { path = "/usr/local/libexec/ums/bootstrap", permissions = "0755", content = local.bootstrap_script },
  ]

  cloud_config = "#cloud-config\n${yamlencode({
    write_files = [for f in local.files : merge(f, { owner = "root:root" })]
    # The unit starts only once the bootstrap (release; for the agent its engine and the CRIU check) succeeded.
    runcmd = [["/usr/local/libexec/ums/bootstrap"]]
  })}"

  # The same as a plain script, for images without cloud-init (GCE's Debian images run `startup-script`
  # metadata through the guest agent instead, at every boot: the bootstrap is idempotent). Contents travel
  # base64-encoded, so no content can end a heredoc or need quoting.
  boot_script = join("\n", concat(
    [
      "#!/usr/bin/env bash",
      "# UMS boot (terraform/modules/agent-cloud-init): writes the ${local.unit_name} files, then runs the bootstrap.",
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
