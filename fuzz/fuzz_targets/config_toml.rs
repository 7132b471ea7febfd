//! Fuzzes config parsing and validation: any text gives a config or a
//! `ConfigError`, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Config::from_toml(text, "fuzz.toml", std::path::Path::new("/etc/sb")) {
        assert!(c.listen.mode <= 0o777);
        assert!(c.limits.max_body_bytes >= c.limits.max_value_bytes);
    }
});
