# Azure's notices about its VMs, sent by Event Grid to the cloud notice ingress (functions/cloud-notice-ingress.ts,
# deployed by gcp-functions with cloud_notices). The events are Azure Resource Notifications' health resources:
# ResourceAnnotated says why a VM's availability is affected (preempted, rebooted for maintenance, frozen),
# AvailabilityStatusChanged that it changed. They are emitted at the subscription's scope only, through a system
# topic of type Microsoft.ResourceNotifications.HealthResources (one per subscription).
resource "azurerm_eventgrid_system_topic" "health" {
  name                = var.system_topic_name
  resource_group_name = var.resource_group_name
  location            = "global"
  source_resource_id  = "/subscriptions/${var.subscription_id}"
  topic_type          = "Microsoft.ResourceNotifications.HealthResources"
  tags                = var.tags
}

resource "azurerm_eventgrid_system_topic_event_subscription" "ingress" {
  name                = "ums-cloud-notices"
  resource_group_name = var.resource_group_name
  system_topic        = azurerm_eventgrid_system_topic.health.name
  # CloudEvents 1.0: the ingress reads that schema, and Event Grid then validates the endpoint with the CloudEvents
  # webhook handshake (OPTIONS, WebHook-Request-Origin), which the ingress answers.
  event_delivery_schema = "CloudEventSchemaV1_0"
  # The types the ingress reads (functions/cloud-notices/azure-event-grid.ts); anything else it would refuse.
  included_event_types = [
    "Microsoft.ResourceNotifications.HealthResources.ResourceAnnotated",
    "Microsoft.ResourceNotifications.HealthResources.AvailabilityStatusChanged",
  ]

  webhook_endpoint {
    url = "${trimsuffix(var.ingress_url, "/")}/eventgrid"
    # One event per request: the ingress takes a batch whole or not at all.
    max_events_per_batch = 1
  }

  # The notice key, as a secret delivery property: Event Grid sends it with every event, and the ingress checks it
  # before it reads anything. Azure keeps it hidden (Is secret); Terraform's state holds it, as it holds every
  # argument: keep the state encrypted.
  delivery_property {
    header_name = "X-UMS-Notice-Key"
    type        = "Static"
    value       = var.notice_key
    secret      = true
  }

  # Only the UMS hosts' VMs (their resource ids are the subject), when they are listed.
  dynamic "advanced_filter" {
    for_each = length(var.vm_ids) > 0 ? [var.vm_ids] : []
    content {
      string_in {
        key    = "subject"
        values = advanced_filter.value
      }
    }
  }

  # A notice an hour old is moot (a Spot VM has 30 s): Event Grid stops retrying then.
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 60
  }
}
