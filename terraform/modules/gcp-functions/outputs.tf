output "function_urls" {
  description = "Function name -> URL (what the bridge's UMS_FUNCTION_ENDPOINTS holds)."
  value       = { for name, fn in google_cloudfunctions2_function.this : name => fn.service_config[0].uri }
}

output "functions_service_account" {
  description = "The functions' service account's email."
  value       = google_service_account.functions.email
}

output "functions_service_account_unique_id" {
  description = "The functions' service account's unique id: the sub (and azp) of its Google ID tokens, which the AWS role (module aws-functions-role) and the Azure federated credential (module azure-functions-identity) trust."
  value       = google_service_account.functions.unique_id
}

output "bridge_service_account" {
  description = "The bridge's service account: the only principal with run.invoker on the functions."
  value       = google_service_account.bridge.email
}

output "bridge_service" {
  description = "The bridge's Cloud Run service name."
  value       = google_cloud_run_v2_service.bridge.name
}

output "cloud_notice_ingress_url" {
  description = "The public cloud notice ingress's URL, for Event Grid (<url>/eventgrid) and EventBridge (<url>/eventbridge); null without it."
  value       = contains(keys(local.notice_ingresses), "public") ? google_cloudfunctions2_function.notice_ingress["public"].service_config[0].uri : null
  # Event Grid validates the endpoint when its subscription is created: the URL is usable once callers may invoke it.
  depends_on = [google_cloud_run_v2_service_iam_member.notice_ingress_public]
}
