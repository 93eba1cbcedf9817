output "cloud_config" {
  description = "The #cloud-config document to pass as the VM's user data (no secret in it)."
  value       = local.cloud_config
}

output "boot_script" {
  description = "The same files and bootstrap as one shell script, for images without cloud-init (GCE `startup-script` metadata)."
  value       = local.boot_script
}

output "environment" {
  description = "The agent unit's environment (/etc/ums/agent.env), name -> value; secrets are added at start by the start script."
  value       = local.environment
}

output "secret_environment" {
  description = "Names of the variables the start script sets from the secret manager (values never leave the host)."
  value       = local.secret_environment
}

output "agent_unit" {
  description = "The ums-agent systemd unit."
  value       = local.agent_unit
}

output "bootstrap_script" {
  description = "The first-boot script cloud-init runs (installs Node, Podman, runc, CRIU via infra/host-setup.sh, the release)."
  value       = local.bootstrap_script
}

output "start_script" {
  description = "The unit's ExecStart: fetches the secrets with the host's identity, then execs the agent."
  value       = local.start_script
}
