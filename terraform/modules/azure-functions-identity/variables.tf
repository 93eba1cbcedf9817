variable "resource_group_name" {
  description = "The resource group the identity goes into."
  type        = string
}

variable "location" {
  description = "The Azure region of the identity (any: it is used from GCP)."
  type        = string
}

variable "name" {
  description = "The user-assigned managed identity's name."
  type        = string
  default     = "ums-functions"
}

variable "google_service_account_unique_id" {
  description = "The unique id (numeric) of the functions' Google service account (module gcp-functions, output functions_service_account_unique_id): the subject of its ID tokens, the only one the federated credential accepts."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{10,30}$", var.google_service_account_unique_id))
    error_message = "google_service_account_unique_id must be the service account's numeric unique id (not its email)."
  }
}

variable "audience" {
  description = "The audience the functions ask their ID token for (UMS_AZURE_TOKEN_AUDIENCE); the federated credential accepts only it."
  type        = string
  default     = "api://AzureADTokenExchange"
}

variable "stores" {
  description = "The Azure stores the functions sign read URLs for and clean up, by a name of your choice: each storage account's id and its container's resource manager id (module azure-storage, outputs account_id and container_id)."
  type = map(object({
    account_id   = string
    container_id = string
  }))
  validation {
    condition     = length(var.stores) > 0
    error_message = "stores must name at least one storage account and container."
  }
}

variable "tags" {
  description = "Tags for the identity."
  type        = map(string)
  default     = {}
}
