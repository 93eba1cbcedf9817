mock_provider "aws" {
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
  }
}

variables {
  google_service_account_unique_id = "112233445566778899001"
  buckets                          = [{ arn = "arn:aws:s3:::ums-a", prefix = "ums" }, { arn = "arn:aws:s3:::ums-b", prefix = "" }]
  kms_key_arns                     = ["arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"]
}

# One plan run: each run starts the aws provider again (seconds each), and a plan shows every input here.
# (The unique id's validation, which refuses an email, is not run here for the same reason.)
run "trusts_only_the_functions_google_identity_and_reads_and_deletes_under_the_prefix_only" {
  command = plan
  assert {
    condition     = one(one(data.aws_iam_policy_document.trust.statement).principals).identifiers == toset(["accounts.google.com"]) && one(data.aws_iam_policy_document.trust.statement).actions == toset(["sts:AssumeRoleWithWebIdentity"])
    error_message = "only web identities from accounts.google.com may assume the role"
  }
  assert {
    # jsonencode on both sides: a list and a tuple of the same strings are not == in Terraform.
    condition = jsonencode({ for c in one(data.aws_iam_policy_document.trust.statement).condition : c.variable => sort(c.values) if c.test == "StringEquals" }) == jsonencode({
      "accounts.google.com:aud"  = ["112233445566778899001"]
      "accounts.google.com:sub"  = ["112233445566778899001"]
      "accounts.google.com:oaud" = ["sts.amazonaws.com"]
    })
    error_message = "the trust must pin the service account (aud = azp, sub) and the token's audience (oaud)"
  }
  assert {
    condition     = aws_iam_role.this.max_session_duration == 3600 && output.audience == "sts.amazonaws.com"
    error_message = "one-hour sessions, and the audience the functions must ask for"
  }
  assert {
    condition     = [for s in data.aws_iam_policy_document.stores.statement : s.resources if s.sid == "CheckpointObjects"][0] == toset(["arn:aws:s3:::ums-a/ums/*", "arn:aws:s3:::ums-b/*"])
    error_message = "objects under each bucket's UMS prefix, nothing else"
  }
  assert {
    condition     = [for s in data.aws_iam_policy_document.stores.statement : s.actions if s.sid == "CheckpointObjects"][0] == toset(["s3:GetObject", "s3:DeleteObject"])
    error_message = "the functions read (signed URLs) and delete (cleanup); they never write"
  }
  assert {
    condition     = jsonencode({ for s in data.aws_iam_policy_document.stores.statement : s.sid => [one(s.resources), one(one(s.condition).values)] if startswith(s.sid, "ListUnderPrefix") }) == jsonencode({ ListUnderPrefix0 = ["arn:aws:s3:::ums-a", "ums/*"], ListUnderPrefix1 = ["arn:aws:s3:::ums-b", "*"] })
    error_message = "listing is limited to the UMS prefix of each bucket"
  }
  assert {
    condition     = length([for s in data.aws_iam_policy_document.stores.statement : s if s.sid == "DecryptCheckpoints"]) == 1
    error_message = "SSE-KMS buckets need kms:Decrypt on their keys"
  }
}
