output "client_id" {
  description = "The identity's client id: the client_id of module gcp-functions' input azure_federation (UMS_AZURE_CLIENT_ID)."
  value       = azurerm_user_assigned_identity.this.client_id
}

output "tenant_id" {
  description = "Its tenant: the tenant_id of module gcp-functions' input azure_federation (UMS_AZURE_TENANT_ID)."
  value       = azurerm_user_assigned_identity.this.tenant_id
}

output "principal_id" {
  description = "Its principal (object) id, for further role assignments."
  value       = azurerm_user_assigned_identity.this.principal_id
}

output "audience" {
  description = "The ID token audience the federated credential accepts: the audience of module gcp-functions' input azure_federation (UMS_AZURE_TOKEN_AUDIENCE)."
  value       = var.audience
}
