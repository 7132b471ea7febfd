//! One conformance suite, instantiated per store: every store answers the
//! same API calls the same way (embedded, vault on OpenBao, aws on moto,
//! gcp on cloudbox, azure on our Key Vault test server or a real vault),
//! plus vault-only checks (auth methods, TLS, namespaces).
//! Remote stores run against the loopback servers `scripts/backends start`
//! brings up; an absent server skips loudly, or fails when `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "conformance/backends.rs"]
mod backends;
#[path = "conformance/suite.rs"]
mod suite;
#[path = "conformance/vault_k8s.rs"]
mod vault_k8s;
#[path = "conformance/vault.rs"]
mod vault_only;
#[path = "conformance/vault_tls.rs"]
mod vault_tls;

/// Instantiates every check of `suite` for one store.
macro_rules! conformance {
    ($store:ident) => {
        mod $store {
            macro_rules! check {
                ($name:ident) => {
                    #[test]
                    fn $name() {
                        let test = concat!(stringify!($store), "::", stringify!($name));
                        if let Some(s) = crate::backends::$store(test) {
                            crate::suite::$name(&s.broker);
                        }
                    }
                };
            }
            check!(put_get_list_delete);
            check!(versions_count_up);
            check!(create_only);
            check!(not_found);
            check!(prefix_listing);
            check!(concurrent_writers);
            check!(path_encoding_round_trip);
            check!(labels);
            check!(ready_and_errors_as_embedded);
            check!(no_value_in_logs);

            #[test]
            fn binary_and_maximum_size() {
                let test = concat!(stringify!($store), "::binary_and_maximum_size");
                if let Some(s) = crate::backends::$store(test) {
                    crate::suite::binary_and_maximum_size(&s.broker, stringify!($store));
                }
            }

            #[test]
            fn empty_value() {
                let test = concat!(stringify!($store), "::empty_value");
                if let Some(s) = crate::backends::$store(test) {
                    crate::suite::empty_value(&s.broker, stringify!($store));
                }
            }
        }
    };
}

conformance!(embedded);
conformance!(vault);
conformance!(aws);
conformance!(gcp);
conformance!(azure);
