//! oci-distribution-terraform-registry: serves Terraform's and OpenTofu's provider installation
//! protocols from packages stored in OCI Distribution registries.
//!
//! Data flows one way: HTTP → mirror service → provider layouts → OCI client.

#![forbid(unsafe_code)]

pub mod access;
pub mod cli;
pub mod config;
pub mod http;
pub mod metadata;
pub mod mirror;
pub mod oci;
pub mod provider;
pub mod registry;
pub mod signing;
pub mod store;
pub mod tls;
