locals {
  # Per bucket: the objects under UMS's prefix (what a signed URL reads and cleanup deletes), and the
  # prefixes ListBucket may name (the same rule as aws-host's).
  objects = [for b in var.buckets : b.prefix == "" ? "${b.arn}/*" : "${b.arn}/${b.prefix}/*"]
}

# Who may assume the role: the functions' Google service account alone, with an ID token minted for this
# audience (core/cloud-identity/aws-web-identity.ts). For Google service-account tokens AWS matches
# accounts.google.com:aud against the token's azp claim (the account's unique id), accounts.google.com:oaud
# against its aud claim and accounts.google.com:sub against its sub (the unique id again). accounts.google.com
# is a built-in provider: no IAM OIDC provider resource is needed.
data "aws_iam_policy_document" "trust" {
  statement {
    sid     = "FunctionsGoogleIdentity"
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = ["accounts.google.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "accounts.google.com:aud"
      values   = [var.google_service_account_unique_id]
    }
    condition {
      test     = "StringEquals"
      variable = "accounts.google.com:sub"
      values   = [var.google_service_account_unique_id]
    }
    condition {
      test     = "StringEquals"
      variable = "accounts.google.com:oaud"
      values   = [var.audience]
    }
  }
}

# What the functions do in AWS stores: sign read URLs (a signed GetObject is only as good as the signer's
# own right to it), list and delete a migration's objects when it ends. They never write there.
data "aws_iam_policy_document" "stores" {
  statement {
    sid       = "CheckpointObjects"
    actions   = ["s3:GetObject", "s3:DeleteObject"]
    resources = local.objects
  }

  dynamic "statement" {
    for_each = var.buckets
    content {
      sid       = "ListUnderPrefix${statement.key}"
      actions   = ["s3:ListBucket"]
      resources = [statement.value.arn]
      condition {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = [statement.value.prefix == "" ? "*" : "${statement.value.prefix}/*"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "DecryptCheckpoints"
      actions   = ["kms:Decrypt"]
      resources = var.kms_key_arns
    }
  }
}

resource "aws_iam_role" "this" {
  name                 = var.name
  description          = "UMS functions (Google service account ${var.google_service_account_unique_id}): read URLs for and cleanup of checkpoints"
  assume_role_policy   = data.aws_iam_policy_document.trust.json
  max_session_duration = var.max_session_hours * 3600
  tags                 = var.tags
}

resource "aws_iam_role_policy" "stores" {
  name   = "ums-functions-stores"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.stores.json
}
