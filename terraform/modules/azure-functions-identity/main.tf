# The functions' identity in Azure. They run in GCP, so no Azure managed identity is attached to them:
# Microsoft Entra ID exchanges their Google ID token for this identity's access token
# (core/cloud-identity/azure-federated-credential.ts), and no Azure secret exists anywhere.
resource "azurerm_user_assigned_identity" "this" {
  name                = var.name
  resource_group_name = var.resource_group_name
  location            = var.location
  tags                = var.tags
}

# Trusts exactly the functions' Google service account: a token is accepted as this identity's client
# assertion only if its iss, sub and aud are these (Google puts the account's unique id in sub).
resource "azurerm_federated_identity_credential" "google" {
  name                = "ums-functions-google"
  resource_group_name = var.resource_group_name
  parent_id           = azurerm_user_assigned_identity.this.id
  issuer              = "https://accounts.google.com"
  subject             = var.google_service_account_unique_id
  audience            = [var.audience]
}

# Signed read URLs are user delegation SAS: the delegation key is asked for at the account (Storage Blob
# Delegator, nothing else at that scope), and a SAS grants no more than its signer may do on the blob at the
# time it is used, so the identity also needs read there; delete too, for a migration's cleanup.
resource "azurerm_role_assignment" "delegator" {
  for_each             = var.stores
  scope                = each.value.account_id
  role_definition_name = "Storage Blob Delegator"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  # A new identity may not have replicated through Entra ID yet; the type lets the assignment go ahead.
  principal_type = "ServicePrincipal"
}

resource "azurerm_role_assignment" "blobs" {
  for_each             = var.stores
  scope                = each.value.container_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.this.principal_id
  principal_type       = "ServicePrincipal"
}
