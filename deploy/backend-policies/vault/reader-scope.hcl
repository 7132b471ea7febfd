# A per-scope reader: the values under one broker scope, read-only. Copy it
# per scope, replacing `acme/tasks/t-42` (and `secret/` with your mount, and
# prepending your `store.prefix` if any). The trailing `/*` matches every
# secret inside the scope and its nested scopes, never `acme/tasks/t-420`.
path "secret/data/acme/tasks/t-42/*" {
  capabilities = ["read"]
}

path "secret/metadata/acme/tasks/t-42/*" {
  capabilities = ["read", "list"]
}
