output "broker_url" {
  description = "NATS_URL for `ums` (and every component)."
  value       = module.broker.url
}

output "broker_addresses" {
  description = "Create an A record for broker_dns_name with each of these."
  value       = module.broker.addresses
}

output "stream_replicas" {
  description = "The replica count of the broker's streams and KV buckets (one per server): pass it to `deploy-credentials provision --replicas`."
  value       = module.broker.stream_replicas
}

output "agent_ids" {
  description = "The agents `ums migrate --to` takes."
  value       = [module.azure_host.agent_id, module.gcp_host.agent_id, module.aws_host.agent_id]
}

output "cli_environment" {
  description = "What `ums` needs on the operator's machine: paths only, the credential file stays where deploy-credentials wrote it."
  value = {
    NATS_URL             = module.broker.url
    UMS_NATS_CA          = var.broker_ca_pem_file
    UMS_NATS_CREDENTIALS = "${var.credentials_dir}/credentials/cli.json"
  }
}

output "secrets_to_fill" {
  description = "Secret Manager and Key Vault secrets whose values you add outside Terraform (README, step 4)."
  value = {
    gcp_secret_manager  = sort([for s in google_secret_manager_secret.this : s.secret_id if s.secret_id != "ums-cloud-notice-key"])
    azure_key_vault     = concat(["${azurerm_key_vault.ums.name}/ums-agent-${local.azure_agent}-nats"], [for f in module.azure_frontman : "${azurerm_key_vault.ums.name}/ums-frontman-nats"])
    aws_secrets_manager = concat([aws_secretsmanager_secret.agent_nats.arn], aws_secretsmanager_secret.frontman_nats[*].arn)
  }
}

output "stores" {
  description = "The hosts' store URLs."
  value = {
    (module.azure_host.agent_id) = module.azure_storage.store_url
    (module.gcp_host.agent_id)   = module.gcp_bucket.store_url
    (module.aws_host.agent_id)   = module.aws_bucket.store_url
  }
}

output "frontman_address" {
  description = "The frontman's static address (what the fronted services' clients point at), in frontman_cloud; null without frontman_services."
  value       = local.frontman_address
}

output "frontman_endpoints" {
  description = "Each fronted service's stable endpoint, container -> address:port; empty without frontman_services."
  value       = merge(concat(module.frontman[*].endpoints, module.azure_frontman[*].endpoints, module.aws_frontman[*].endpoints)...)
}
