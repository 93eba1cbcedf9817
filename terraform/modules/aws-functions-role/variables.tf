variable "name" {
  description = "The role's name."
  type        = string
  default     = "ums-functions"
}

variable "google_service_account_unique_id" {
  description = "The unique id (numeric) of the functions' Google service account (module gcp-functions, output functions_service_account_unique_id): the sub and azp of its ID tokens, the only identity the role trusts."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{10,30}$", var.google_service_account_unique_id))
    error_message = "google_service_account_unique_id must be the service account's numeric unique id (not its email)."
  }
}

variable "audience" {
  description = "The audience the functions ask their ID token for (UMS_AWS_TOKEN_AUDIENCE); the trust checks it as accounts.google.com:oaud."
  type        = string
  default     = "sts.amazonaws.com"
}

variable "buckets" {
  description = "The AWS stores the functions sign read URLs for and clean up: each bucket's ARN (module aws-bucket, output arn) and UMS's prefix in it (output prefix)."
  type = list(object({
    arn    = string
    prefix = string
  }))
  validation {
    condition     = length(var.buckets) > 0 && alltrue([for b in var.buckets : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b.arn)) && (b.prefix == "" || can(regex("^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$", b.prefix)))])
    error_message = "buckets must list at least one bucket ARN (arn:aws:s3:::name) with a prefix that is empty or path segments without leading or trailing slashes."
  }
}

variable "kms_key_arns" {
  description = "Customer-managed KMS keys the buckets are encrypted with (aws-bucket's kms_key_arn): reading through a signed URL needs kms:Decrypt on them. Empty for SSE-S3."
  type        = list(string)
  default     = []
}

variable "max_session_hours" {
  description = "The longest session STS grants the role (the functions ask for one hour and renew before it ends)."
  type        = number
  default     = 1
  validation {
    condition     = var.max_session_hours >= 1 && var.max_session_hours <= 12 && floor(var.max_session_hours) == var.max_session_hours
    error_message = "max_session_hours must be a whole number from 1 to 12."
  }
}

variable "tags" {
  description = "Tags for the role."
  type        = map(string)
  default     = {}
}
