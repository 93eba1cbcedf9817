variable "project_id" {
  description = "The GCP project the bucket belongs to."
  type        = string
}

variable "name" {
  description = "The bucket's name (globally unique)."
  type        = string
  validation {
    # The rule core/object-stores/open-object-store.ts applies to gs:// URLs, without dots (TLS on the
    # virtual-hosted name) and at most 63 characters.
    condition     = can(regex("^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$", var.name))
    error_message = "name must be 3-63 lowercase letters, digits, dashes and underscores, starting and ending with a letter or digit."
  }
}

variable "location" {
  description = "The bucket's location: the region of the hosts that write to it, e.g. us-central1."
  type        = string
}

variable "prefix" {
  description = "Object prefix UMS uses inside the bucket (the path of the store URL, gs://<name>/<prefix>); \"\" for the root."
  type        = string
  default     = "ums"
  validation {
    condition     = var.prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", var.prefix))
    error_message = "prefix must be empty or path segments without leading or trailing slashes."
  }
}

variable "abandoned_after_days" {
  description = "Migration objects (<prefix>/migrations/) older than this are deleted: a crashed migration's checkpoint does not stay."
  type        = number
  default     = 1
  validation {
    condition     = var.abandoned_after_days >= 1 && floor(var.abandoned_after_days) == var.abandoned_after_days
    error_message = "abandoned_after_days must be a whole number of at least 1."
  }
}

variable "kms_key_name" {
  description = "A Cloud KMS key to encrypt with (CMEK); null: Google-managed keys (GCS always encrypts at rest)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds checkpoints."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
}
