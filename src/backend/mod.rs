//! Backends that carry an isolate's messages across a real boundary.

pub(crate) mod launch;
#[cfg(target_os = "linux")]
pub(crate) mod process;
pub(crate) mod registry;

#[cfg(feature = "nats")]
pub(crate) mod nats;

/// Encodes with a user codec; a panicking `Serialize` is an error, not an
/// unwinding caller. Shared by every backend.
#[cfg(any(target_os = "linux", feature = "nats"))]
pub(crate) fn encode<T: serde::Serialize, C: crate::codec::Codec>(
    codec: &C,
    value: &T,
    what: &str,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match crate::unwind::catch(|| codec.encode(value, &mut out)) {
        Ok(Ok(())) => Ok(out),
        Ok(Err(e)) => Err(format!("the {what} could not be encoded: {e}")),
        Err(caught) => Err(format!(
            "the {what}'s Serialize panicked: {}",
            caught.message
        )),
    }
}

/// Decodes with a user codec, under its limit; a panicking `Deserialize`
/// is an error.
#[cfg(any(target_os = "linux", feature = "nats"))]
pub(crate) fn decode<T: serde::de::DeserializeOwned, C: crate::codec::Codec>(
    codec: &C,
    bytes: &[u8],
    what: &str,
) -> Result<T, String> {
    match crate::unwind::catch(|| codec.decode::<T>(bytes)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("the {what} could not be decoded: {e}")),
        Err(caught) => Err(format!(
            "the {what}'s Deserialize panicked: {}",
            caught.message
        )),
    }
}

/// A user codec on a backend's wire: encodes and decodes with typed
/// errors. Each backend implements its wire trait (what crosses for an
/// isolate, a worker, a remote pool) on it.
#[cfg(any(target_os = "linux", feature = "nats"))]
pub(crate) struct CodecWire<C>(pub(crate) C);

#[cfg(any(target_os = "linux", feature = "nats"))]
impl<C: crate::codec::Codec> CodecWire<C> {
    pub(crate) fn encode<T: serde::Serialize>(
        &self,
        value: &T,
        what: &str,
    ) -> Result<Vec<u8>, crate::error::CodecError> {
        encode(&self.0, value, what).map_err(crate::error::CodecError::Encode)
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, crate::error::CodecError> {
        decode(&self.0, bytes, what).map_err(crate::error::CodecError::Malformed)
    }
}
