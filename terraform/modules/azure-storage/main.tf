locals {
  # core/checkpoint-artifact.ts artifactPrefix(): migrations/<id>/ below the store's prefix. Azure's
  # prefix_match starts with the container's name (test/unit/terraform-static.test.ts compares them).
  migrations_prefix = var.prefix == "" ? "migrations/" : "${var.prefix}/migrations/"
}

resource "azurerm_storage_account" "this" {
  name                     = var.account_name
  resource_group_name      = var.resource_group_name
  location                 = var.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = "LRS"
  access_tier              = "Hot"

  # Private and https only; Azure Storage encrypts at rest (Microsoft-managed keys), and infrastructure
  # encryption adds a second layer.
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  allow_nested_items_to_be_public   = false
  infrastructure_encryption_enabled = true
  # agents/main.ts signs in to Blob with the account key (AZURE_STORAGE_KEY, from Key Vault): shared keys
  # stay enabled until the agent uses its managed identity for Blob.
  shared_access_key_enabled = true

  blob_properties {
    delete_retention_policy {
      days = 1
    }
  }

  tags = var.tags
}

resource "azurerm_storage_container" "this" {
  name                  = var.container_name
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

resource "azurerm_storage_management_policy" "this" {
  storage_account_id = azurerm_storage_account.this.id
  rule {
    name    = "expire-abandoned-migrations"
    enabled = true
    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${azurerm_storage_container.this.name}/${local.migrations_prefix}"]
    }
    actions {
      base_blob {
        delete_after_days_since_modification_greater_than = var.abandoned_after_days
      }
    }
  }
}
