variable "name" {
  description = "The prefix of the rules, the connection, the API destination and the role (unique in the account and region)."
  type        = string
  default     = "ums-cloud-notices"
  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,40}$", var.name))
    error_message = "name is 1 to 40 letters, digits, '.', '_' or '-'."
  }
}

variable "ingress_url" {
  description = "The public cloud notice ingress's URL (module gcp-functions, output cloud_notice_ingress_url); events go to <url>/eventbridge."
  type        = string
  validation {
    condition     = startswith(var.ingress_url, "https://")
    error_message = "ingress_url must be an https URL."
  }
}

variable "notice_key" {
  description = "The notice key (the value of gcp-functions' cloud_notices.key_secret): the connection's API key, sent as X-UMS-Notice-Key."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.notice_key) >= 32 && can(regex("^[!-~]+$", var.notice_key))
    error_message = "notice_key must be at least 32 printable characters without spaces."
  }
}

variable "instance_ids" {
  description = "The UMS hosts' EC2 instance ids (module aws-host, output instance_id): only their events are sent. Empty: every instance of the account in this region (the ingress acknowledges and drops those no agent runs on)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for id in var.instance_ids : can(regex("^i-[0-9a-f]{8,32}$", id))])
    error_message = "instance_ids are EC2 instance ids (i-...)."
  }
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}
