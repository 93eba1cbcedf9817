output "function_urls" {
  description = "Function name -> URL (what the bridge's UMS_FUNCTION_ENDPOINTS holds)."
  value       = { for name, fn in google_cloudfunctions2_function.this : name => fn.service_config[0].uri }
}

output "functions_service_account" {
  description = "The functions' service account (give it read and delete on the other clouds' stores as their keys allow)."
  value       = google_service_account.functions.email
}

output "bridge_service" {
  description = "The bridge's Cloud Run service name."
  value       = google_cloud_run_v2_service.bridge.name
}
