variable "project_id" {
  description = "The GCP project the functions and the bridge run in."
  type        = string
}

variable "region" {
  description = "The region, e.g. us-central1 (the broker's)."
  type        = string
}

variable "functions" {
  description = "The functions to deploy, name -> entry point: exactly the HTTP functions functions/index.ts registers (functions/triggers.ts; test/unit/terraform-static.test.ts compares them)."
  type        = map(string)
  default = {
    planMigration       = "planMigration"
    planRestore         = "planRestore"
    finalize            = "finalize"
    evacuateHost        = "evacuateHost"
    superviseMigrations = "superviseMigrations"
  }
}

variable "source_bucket" {
  description = "The GCS bucket holding the functions' source archive."
  type        = string
}

variable "source_object" {
  description = "The source archive (terraform/scripts/package-functions.sh builds it: dist/ and package.json whose main is dist/functions/index.js). A new object name redeploys."
  type        = string
}

variable "runtime" {
  description = "The Node.js runtime (22 or newer)."
  type        = string
  default     = "nodejs22"
  validation {
    condition     = can(regex("^nodejs([0-9]+)$", var.runtime)) && tonumber(regex("^nodejs([0-9]+)$", var.runtime)[0]) >= 22
    error_message = "runtime must be nodejs22 or newer."
  }
}

variable "min_instances" {
  description = "Warm instances per function: at least 1, so a function called while a service is frozen never pays a cold start."
  type        = number
  default     = 1
  validation {
    condition     = var.min_instances >= 1
    error_message = "min_instances must be at least 1 (a frozen service must not wait for a cold start)."
  }
}

variable "max_instances" {
  description = "The most instances per function."
  type        = number
  default     = 10
}

variable "bridge_image" {
  description = "The trigger bridge's container image (Artifact Registry; runs `node dist/bridge/main.js`, see terraform/README.md)."
  type        = string
}

variable "nats_url" {
  description = "The broker's URL (module gcp-nats-broker, output url)."
  type        = string
}

variable "network" {
  description = "The VPC network the functions (VPC connector) and the bridge (Direct VPC egress) send private traffic into to reach the broker."
  type        = string
}

variable "subnetwork" {
  description = "The subnetwork for the bridge's Direct VPC egress."
  type        = string
}

variable "vpc_connector_cidr" {
  description = "An unused /28 in `network` for the functions' Serverless VPC Access connector (gen2 functions reach private addresses through one); add it to the broker's client_cidrs."
  type        = string
  default     = "10.8.0.0/28"
  validation {
    condition     = can(cidrhost(var.vpc_connector_cidr, 0)) && endswith(var.vpc_connector_cidr, "/28")
    error_message = "vpc_connector_cidr must be a /28."
  }
}

variable "secrets" {
  description = <<-EOT
    Secret Manager secret ids (in project_id). nats_ca: the broker's CA (public, kept with the rest for one
    mount path); functions_nats_credential / bridge_nats_credential: the principals' broker credentials;
    command_signing_key: the functions' Ed25519 key (PKCS#8 PEM); function_auth_key: the bridge's HMAC key
    (UMS_FUNCTION_AUTH_KEY, 32+ random bytes base64); azure_storage_key: the Azure account key the functions
    sign read URLs with (null without an Azure store, or with azure_federation, the keyless way);
    aws_access_key_id / aws_secret_access_key: an IAM user's keys to sign S3 read URLs (null without an AWS
    store, or with aws_web_identity, the keyless way).
  EOT
  type = object({
    nats_ca                   = string
    functions_nats_credential = string
    bridge_nats_credential    = string
    command_signing_key       = string
    function_auth_key         = string
    azure_storage_key         = optional(string)
    aws_access_key_id         = optional(string)
    aws_secret_access_key     = optional(string)
  })
}

variable "azure_storage_account" {
  description = "The Azure storage account whose key secrets.azure_storage_key holds (AZURE_STORAGE_ACCOUNT); null without Azure or with azure_federation (the store URL names the account)."
  type        = string
  default     = null
}

variable "aws_web_identity" {
  description = "Keyless S3 signing: the AWS role the functions assume with their Google ID token (module aws-functions-role, outputs role_arn and audience; UMS_AWS_ROLE_ARN, UMS_AWS_TOKEN_AUDIENCE). null: static keys (secrets.aws_access_key_id/aws_secret_access_key), or no AWS store."
  type = object({
    role_arn = string
    audience = optional(string, "sts.amazonaws.com")
  })
  default = null
}

variable "azure_federation" {
  description = "Keyless Azure signing (user delegation SAS): the user-assigned managed identity federated with the functions' Google service account (module azure-functions-identity, outputs client_id, tenant_id, audience; UMS_AZURE_CLIENT_ID, UMS_AZURE_TENANT_ID, UMS_AZURE_TOKEN_AUDIENCE). null: the account key (secrets.azure_storage_key), or no Azure store."
  type = object({
    client_id = string
    tenant_id = string
    audience  = optional(string, "api://AzureADTokenExchange")
  })
  default = null
}

variable "aws_region" {
  description = "The region of the S3 bucket (AWS_REGION) the functions sign for, and of the STS endpoint they assume aws_web_identity's role at; null without AWS."
  type        = string
  default     = null
}

variable "signed_url_ttl_seconds" {
  description = "Lifetime of the read URLs the functions sign (UMS_SIGNED_URL_TTL_SECONDS)."
  type        = number
  default     = 900
  validation {
    condition     = var.signed_url_ttl_seconds >= 60 && var.signed_url_ttl_seconds <= 3600
    error_message = "signed_url_ttl_seconds must be between 60 and 3600."
  }
}

variable "supervise_every_seconds" {
  description = "How often the bridge's tick runs the supervisor (UMS_SUPERVISE_EVERY_SECONDS)."
  type        = number
  default     = 5
}

variable "bucket_names" {
  description = "GCS buckets the functions sign read URLs for and clean up (the gcp stores)."
  type        = list(string)
  default     = []
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "cloud_notices" {
  description = "The cloud notice ingress (functions/cloud-notice-ingress.ts): null for none. key_secret: the Secret Manager secret id of the notice key (UMS_CLOUD_NOTICE_KEY: 32+ printable characters, e.g. 32 random bytes base64; the same value goes to the Event Grid subscription and the EventBridge connection, modules azure-notice-events and aws-notice-events); public: deploy the ingress Event Grid and EventBridge call (anyone may invoke it, the function checks the key); eventarc: deploy the Eventarc route for Compute Engine's own notices (a Logging sink into Pub/Sub, an Eventarc trigger, an ingress only the trigger's identity may invoke)."
  type = object({
    key_secret = string
    public     = optional(bool, true)
    eventarc   = optional(bool, true)
  })
  default = null
}
