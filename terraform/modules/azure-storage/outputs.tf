output "account_name" {
  description = "The storage account's name."
  value       = azurerm_storage_account.this.name
}

output "account_id" {
  description = "The storage account's resource id (for role assignments)."
  value       = azurerm_storage_account.this.id
}

output "container_name" {
  description = "The blob container's name."
  value       = azurerm_storage_container.this.name
}

output "container_id" {
  description = "The container's resource manager id (the scope of a host's Storage Blob Data Contributor role)."
  value       = azurerm_storage_container.this.resource_manager_id
}

output "store_url" {
  description = "The store URL agents and functions use (UMS_STORE_URL)."
  value       = var.prefix == "" ? "azblob://${azurerm_storage_account.this.name}/${azurerm_storage_container.this.name}" : "azblob://${azurerm_storage_account.this.name}/${azurerm_storage_container.this.name}/${var.prefix}"
}

output "primary_access_key" {
  description = "The account key (sensitive): put into Key Vault by the host module for AZURE_STORAGE_KEY; never printed."
  value       = azurerm_storage_account.this.primary_access_key
  sensitive   = true
}

output "migrations_prefix" {
  description = "The blob prefix (below the container) the management policy deletes."
  value       = local.migrations_prefix
}
