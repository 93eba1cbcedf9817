variable "subscription_id" {
  description = "The Azure subscription whose VMs' health events are sent (the system topic's source)."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F-]{36}$", var.subscription_id))
    error_message = "subscription_id is the subscription's GUID."
  }
}

variable "resource_group_name" {
  description = "The resource group of the system topic and its subscription."
  type        = string
}

variable "system_topic_name" {
  description = "The Event Grid system topic's name. A subscription has one HealthResources system topic: with one already, import it under this module rather than create a second."
  type        = string
  default     = "ums-health-resources"
}

variable "ingress_url" {
  description = "The public cloud notice ingress's URL (module gcp-functions, output cloud_notice_ingress_url); events go to <url>/eventgrid."
  type        = string
  validation {
    condition     = startswith(var.ingress_url, "https://")
    error_message = "ingress_url must be an https URL."
  }
}

variable "notice_key" {
  description = "The notice key (the value of gcp-functions' cloud_notices.key_secret): sent as X-UMS-Notice-Key, a secret delivery property."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.notice_key) >= 32 && can(regex("^[!-~]+$", var.notice_key))
    error_message = "notice_key must be at least 32 printable characters without spaces."
  }
}

variable "vm_ids" {
  description = "The resource ids of the UMS hosts' VMs: only their events are sent. Empty: every VM of the subscription (the ingress acknowledges and drops those no agent runs on)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the system topic."
  type        = map(string)
  default     = {}
}
