output "system_topic_id" {
  description = "The HealthResources system topic's id."
  value       = azurerm_eventgrid_system_topic.health.id
}

output "event_subscription_id" {
  description = "The event subscription that delivers to the ingress."
  value       = azurerm_eventgrid_system_topic_event_subscription.ingress.id
}
