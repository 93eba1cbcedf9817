variable "name" {
  description = "The bucket's name (globally unique)."
  type        = string
  validation {
    # The rule core/object-stores/open-object-store.ts applies to s3:// URLs (no dots: virtual-hosted TLS).
    condition     = can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be 3-63 lowercase letters, digits and dashes, starting and ending with a letter or digit."
  }
}

variable "prefix" {
  description = "Key prefix UMS uses inside the bucket (the path of the store URL, s3://<name>/<prefix>); \"\" for the bucket's root."
  type        = string
  default     = "ums"
  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix))
    error_message = "prefix must be empty or path segments without leading or trailing slashes."
  }
}

variable "abandoned_after_days" {
  description = "Migration objects (<prefix>/migrations/) older than this are expired: a migration that crashed before cleaning up leaves no checkpoint behind for long."
  type        = number
  default     = 1
  validation {
    condition     = var.abandoned_after_days >= 1 && floor(var.abandoned_after_days) == var.abandoned_after_days
    error_message = "abandoned_after_days must be a whole number of at least 1."
  }
}

variable "kms_key_arn" {
  description = "A customer-managed KMS key to encrypt with (SSE-KMS); null: S3-managed keys (SSE-S3)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds checkpoints."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the bucket."
  type        = map(string)
  default     = {}
}
