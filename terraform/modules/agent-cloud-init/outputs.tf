output "cloud_config" {
  description = "The #cloud-config document to pass as the VM's user data (no secret in it)."
  value       = local.cloud_config
  precondition {
    condition     = var.frontman != null || (var.agent_id != null && var.store_url != null && var.command_verify_key != null)
    error_message = "an agent needs agent_id, store_url and command_verify_key (or set frontman to render a frontman)."
  }
  precondition {
    # agents/main.ts: post-copy goes through the runtime shim Podman is given; a Docker host moves stop-and-copy.
    condition     = var.engine == "podman" || var.page_relay_address == null
    error_message = "a Docker host takes no part in post-copy: page_relay_address must be null with engine = \"docker\"."
  }
  precondition {
    condition     = var.frontman == null || var.secrets.storage_key == null
    error_message = "a frontman has no store: secrets.storage_key must be null."
  }
}

output "boot_script" {
  description = "The same files and bootstrap as one shell script, for images without cloud-init (GCE `startup-script` metadata)."
  value       = local.boot_script
  precondition {
    condition     = var.frontman != null || (var.agent_id != null && var.store_url != null && var.command_verify_key != null)
    error_message = "an agent needs agent_id, store_url and command_verify_key (or set frontman to render a frontman)."
  }
  precondition {
    # agents/main.ts: post-copy goes through the runtime shim Podman is given; a Docker host moves stop-and-copy.
    condition     = var.engine == "podman" || var.page_relay_address == null
    error_message = "a Docker host takes no part in post-copy: page_relay_address must be null with engine = \"docker\"."
  }
}

output "environment" {
  description = "The unit's environment (/etc/ums/agent.env, or /etc/ums/frontman.env), name -> value; secrets are added at start by the start script."
  value       = local.environment
}

output "secret_environment" {
  description = "Names of the variables the start script sets from the secret manager (values never leave the host)."
  value       = local.secret_environment
}

output "unit_name" {
  description = "The systemd unit it runs: ums-agent, or ums-frontman when frontman is set."
  value       = local.unit_name
}

output "unit" {
  description = "That systemd unit's file (ums-agent.service or ums-frontman.service)."
  value       = local.unit
}

output "bootstrap_script" {
  description = "The first-boot script cloud-init runs (installs Node and the release; for an agent its engine, runc and CRIU via infra/host-setup.sh)."
  value       = local.bootstrap_script
}

output "start_script" {
  description = "The unit's ExecStart: fetches the secrets with the VM's identity, then execs the agent (or the frontman)."
  value       = local.start_script
}
