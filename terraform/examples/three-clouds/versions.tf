terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.0, < 5.0"
    }
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
  # Use a remote backend with encryption and tight access for a real deployment: the state holds the Azure
  # storage account's key (azurerm keeps it on the account resource) and the Key Vault secret built from it
  # (the Azure agent's). The functions need no AWS or Azure key: they assume an AWS role and an Azure
  # identity with their Google identity (modules aws-functions-role, azure-functions-identity).
}

provider "google" {
  project = var.gcp_project_id
  region  = var.gcp_region
}

provider "azurerm" {
  features {}
  subscription_id = var.azure_subscription_id
}

provider "aws" {
  region = var.aws_region
}
