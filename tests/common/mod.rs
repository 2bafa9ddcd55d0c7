//! Helpers shared by the integration tests.

use std::time::{Duration, Instant};

pub(crate) mod nats_server;
pub(crate) mod store;

use serde::{Deserialize, Deserializer, Serialize};

/// Polls `cond` every millisecond until it holds or `timeout` passes; returns
/// whether it held.
pub(crate) fn wait_until(mut cond: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A number the receiving side refuses to decode when it is odd: a message
/// that encodes fine and fails to decode.
#[allow(dead_code)] // not every test file sends one
#[derive(Debug, PartialEq, Serialize)]
pub(crate) struct Even(pub(crate) u32);

impl<'de> Deserialize<'de> for Even {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u32::deserialize(d)?;
        if n % 2 == 0 {
            Ok(Even(n))
        } else {
            Err(serde::de::Error::custom(format!("{n} is odd")))
        }
    }
}
