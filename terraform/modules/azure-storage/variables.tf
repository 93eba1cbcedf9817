variable "resource_group_name" {
  description = "The resource group the storage account goes into."
  type        = string
}

variable "location" {
  description = "The Azure region, e.g. eastus: the region of the hosts that write to it."
  type        = string
}

variable "account_name" {
  description = "The storage account's name (globally unique)."
  type        = string
  validation {
    # The rule core/object-stores/open-object-store.ts applies to azblob:// URLs.
    condition     = can(regex("^[a-z0-9]{3,24}$", var.account_name))
    error_message = "account_name must be 3-24 lowercase letters and digits."
  }
}

variable "container_name" {
  description = "The blob container holding the checkpoints."
  type        = string
  default     = "checkpoints"
  validation {
    condition     = can(regex("^[a-z0-9](-?[a-z0-9])+$", var.container_name)) && length(var.container_name) <= 63
    error_message = "container_name must be 3-63 lowercase letters, digits and single dashes."
  }
}

variable "prefix" {
  description = "Blob prefix UMS uses inside the container (azblob://<account>/<container>/<prefix>); \"\" for the container's root."
  type        = string
  default     = "ums"
  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix))
    error_message = "prefix must be empty or path segments without leading or trailing slashes."
  }
}

variable "abandoned_after_days" {
  description = "Migration blobs (<container>/<prefix>/migrations/) not modified for this long are deleted."
  type        = number
  default     = 1
  validation {
    condition     = var.abandoned_after_days >= 1 && floor(var.abandoned_after_days) == var.abandoned_after_days
    error_message = "abandoned_after_days must be a whole number of at least 1."
  }
}

variable "tags" {
  description = "Tags for the storage account."
  type        = map(string)
  default     = {}
}
