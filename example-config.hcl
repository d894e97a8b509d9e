# Example configuration for oci-distribution-terraform-registry.
#
# Copy it to one of the configuration directories (for example
# ~/.config/oci-distribution-terraform-registry/config.hcl or
# /etc/oci-distribution-terraform-registry/config.hcl), or pass it with
# --config=FILE. Relative file paths are relative to this file's directory.

server {
  # Address and port to listen on. Use "0.0.0.0:8443" or "[::]:8443" to accept
  # connections from other machines. Port 0 picks a free port (printed at start).
  listen_addr = "127.0.0.1:8443"

  # 32 random bytes as 64 hex characters (`openssl rand -hex 32`). Seals the
  # client's credentials into package download URLs when proxy_packages = true.
  # Give every instance behind one load balancer the same value. If omitted, a
  # random secret is generated at each start.
  query_string_secret = "0000000000000000000000000000000000000000000000000000000000000000"

  # How long a sealed download URL stays valid (default "3m").
  download_url_ttl = "3m"

  # Terraform only uses https:// mirrors. Without a tls block the server speaks
  # plain HTTP, for use behind a TLS-terminating proxy.
  tls {
    certificate_file = "cert.pem"
    private_key_file = "key.pem"
  }
}

# A provider network mirror, served at https://HOST/mirror/ .
provider_mirror "mirror" {
  # The URL of the OCI Distribution registry containing the packages.
  origin_url = "http://127.0.0.1:5000/"

  # The repository prefix under which providers are stored. The provider's
  # address is appended: registry.terraform.io/hashicorp/aws is looked up in
  # the repository terraform-providers/registry.terraform.io/hashicorp/aws.
  name_prefix = "terraform-providers"

  # When the registry needs credentials, Terraform sends its token for this
  # server (a `credentials` block in its CLI configuration) with its metadata
  # requests, and it is passed on to the registry. Terraform sends no
  # credentials with package downloads, so with proxy_packages = true the
  # download URLs carry the token sealed under query_string_secret.
  proxy_packages = true
}
