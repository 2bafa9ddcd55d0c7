//! The one invoke path: take the input, call user code under
//! [`catch`](crate::unwind::catch), and come back with one typed outcome,
//! [`Invoked`]; encode it only where the path needs bytes.
//!
//! Every place that runs a user's function for a caller goes through here:
//! an isolate's run loop and its process child, a pool worker's thread, its
//! process child and its NATS worker, [`run`](crate::run()) and
//! [`process::run`](crate::process::run)'s child. Each then does only what
//! is its own with the outcome (counts it, reports it, restarts a state).
//!
//! In-process the outcome stays a value: [`Invoked::pack`] moves it into an
//! envelope (O(1), whatever its size) unless the path was asked to copy.
//! Across a boundary [`Invoked::encode_with`] turns it into bytes on the
//! side that owns it, and the frame helpers carry it over a wire and back.

use crate::codec::envelope::Envelope;
use crate::error::CodecError;
use crate::pending::Reply;
use crate::port::DynCodec;
use crate::unwind::{self, Caught};

/// What one call of user code came to.
pub(crate) enum Invoked<T, E> {
    /// The function returned a value.
    Value(T),
    /// The function returned its own error.
    Failed(E),
    /// The function panicked: what it held may be half-changed.
    Panicked(Caught),
    /// The input could not be taken (decoded): the function did not run.
    BadInput(CodecError),
    /// The value or error could not be encoded for its way back.
    Unencodable(CodecError),
}

/// Calls `f` under `catch`.
pub(crate) fn call<T, E>(f: impl FnOnce() -> Result<T, E>) -> Invoked<T, E> {
    match unwind::catch(f) {
        Ok(Ok(value)) => Invoked::Value(value),
        Ok(Err(error)) => Invoked::Failed(error),
        Err(caught) => Invoked::Panicked(caught),
    }
}

/// Calls `f` with the input, if it could be taken (moved out of its
/// envelope, or decoded); a bad input is the outcome, and `f` does not run.
pub(crate) fn invoke<A, T, E>(
    input: Result<A, CodecError>,
    f: impl FnOnce(A) -> Result<T, E>,
) -> Invoked<T, E> {
    match input {
        Ok(input) => call(|| f(input)),
        Err(e) => Invoked::BadInput(e),
    }
}

impl<T, E> Invoked<T, E> {
    /// Whether the function panicked.
    pub(crate) fn panicked(&self) -> bool {
        matches!(self, Invoked::Panicked(_))
    }

    /// The encoding (or decoding) step: the value through `value`, the
    /// error through `error`; one that fails is
    /// [`Unencodable`](Invoked::Unencodable).
    pub(crate) fn encode_with<U, F>(
        self,
        value: impl FnOnce(T) -> Result<U, CodecError>,
        error: impl FnOnce(E) -> Result<F, CodecError>,
    ) -> Invoked<U, F> {
        match self {
            Invoked::Value(v) => value(v).map_or_else(Invoked::Unencodable, Invoked::Value),
            Invoked::Failed(e) => error(e).map_or_else(Invoked::Unencodable, Invoked::Failed),
            Invoked::Panicked(caught) => Invoked::Panicked(caught),
            Invoked::BadInput(e) => Invoked::BadInput(e),
            Invoked::Unencodable(e) => Invoked::Unencodable(e),
        }
    }

    /// Packs the value or error for its way back within this process: a
    /// move (no user code runs, O(1)), or an encode where the codec copies.
    pub(crate) fn pack(
        self,
        value: &DynCodec<T>,
        error: &DynCodec<E>,
    ) -> Invoked<Envelope<T>, Envelope<E>> {
        self.encode_with(
            |v| {
                value
                    .pack(v, "value")
                    .map(|p| p.envelope)
                    .map_err(|(_, e)| e)
            },
            |e| {
                error
                    .pack(e, "value")
                    .map(|p| p.envelope)
                    .map_err(|(_, e)| e)
            },
        )
    }
}

impl<T, E> Invoked<Envelope<T>, Envelope<E>> {
    /// The reply a waiting caller is sent.
    pub(crate) fn into_reply(self) -> Reply<T, E> {
        match self {
            Invoked::Value(v) => Reply::Value(v),
            Invoked::Failed(e) => Reply::Failed(e),
            Invoked::Panicked(caught) => Reply::Panicked(caught.message),
            Invoked::BadInput(e) => Reply::BadMessage(e),
            Invoked::Unencodable(e) => Reply::Unencodable(e),
        }
    }
}

/// What an encoded outcome is on a wire; each backend gives each its own
/// frame code.
#[cfg(any(target_os = "linux", feature = "nats"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Value,
    Failed,
    Panicked,
    BadInput,
    Unencodable,
}

#[cfg(any(target_os = "linux", feature = "nats"))]
impl Invoked<Vec<u8>, Vec<u8>> {
    /// The outcome as a frame: its kind and body (the bytes, or the text of
    /// the panic or the codec's error).
    pub(crate) fn into_frame(self) -> (Answer, Vec<u8>) {
        match self {
            Invoked::Value(bytes) => (Answer::Value, bytes),
            Invoked::Failed(bytes) => (Answer::Failed, bytes),
            Invoked::Panicked(caught) => (Answer::Panicked, caught.message.into_bytes()),
            Invoked::BadInput(e) => (Answer::BadInput, error_text(e)),
            Invoked::Unencodable(e) => (Answer::Unencodable, error_text(e)),
        }
    }

    /// The outcome a frame carries (the inverse of
    /// [`into_frame`](Self::into_frame)); the value and error stay bytes
    /// until [`encode_with`](Invoked::encode_with) decodes them.
    pub(crate) fn from_frame(kind: Answer, body: &[u8]) -> Self {
        let text = || String::from_utf8_lossy(body).into_owned();
        match kind {
            Answer::Value => Invoked::Value(body.to_vec()),
            Answer::Failed => Invoked::Failed(body.to_vec()),
            Answer::Panicked => Invoked::Panicked(Caught {
                message: text(),
                stack: String::new(),
            }),
            Answer::BadInput => Invoked::BadInput(CodecError::Malformed(text())),
            Answer::Unencodable => Invoked::Unencodable(CodecError::Encode(text())),
        }
    }
}

/// A codec error's text on a wire: the backends' errors carry their whole
/// text, which goes as it is.
#[cfg(any(target_os = "linux", feature = "nats"))]
fn error_text(e: CodecError) -> Vec<u8> {
    match e {
        CodecError::Malformed(text) | CodecError::Encode(text) => text.into_bytes(),
        other => other.to_string().into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Bincode;
    use crate::port::dyn_codec;

    #[test]
    fn a_call_is_value_error_or_panic() {
        assert!(matches!(call(|| Ok::<_, ()>(3)), Invoked::Value(3)));
        assert!(matches!(call(|| Err::<(), _>("no")), Invoked::Failed("no")));
        let panicked = call(|| -> Result<(), ()> { panic!("boom") });
        assert!(panicked.panicked());
        let Invoked::Panicked(caught) = panicked else {
            unreachable!()
        };
        assert_eq!(caught.message, "boom");
    }

    #[test]
    fn a_bad_input_does_not_call() {
        let mut called = false;
        let invoked = invoke(Err(CodecError::Malformed("bad".into())), |x: u8| {
            called = true;
            Ok::<_, ()>(x)
        });
        assert!(matches!(
            invoked,
            Invoked::BadInput(CodecError::Malformed(_))
        ));
        assert!(!called);
        assert!(matches!(
            invoke(Ok(4u8), |x| Ok::<_, ()>(x * 2)),
            Invoked::Value(8)
        ));
    }

    #[test]
    fn packing_moves_in_process_and_encodes_when_copying() {
        let moved = dyn_codec::<_, Vec<u8>>(&Bincode::new(), false);
        let errors = dyn_codec::<_, String>(&Bincode::new(), false);
        let value = vec![7u8; 1 << 16];
        let ptr = value.as_ptr();
        let Invoked::Value(Envelope::Moved(back)) =
            call(|| Ok::<_, String>(value)).pack(&moved, &errors)
        else {
            panic!("a moved value")
        };
        assert_eq!(back.as_ptr(), ptr, "the same allocation comes back");

        let small = dyn_codec::<_, Vec<u8>>(&Bincode::<64>::limited(), true);
        let packed = call(|| Ok::<_, String>(vec![1u8; 1000])).pack(&small, &errors);
        assert!(matches!(
            packed.into_reply(),
            Reply::Unencodable(CodecError::TooLarge { .. })
        ));
    }

    #[cfg(any(target_os = "linux", feature = "nats"))]
    #[test]
    fn frames_carry_every_outcome_there_and_back() {
        let outcomes: Vec<Invoked<Vec<u8>, Vec<u8>>> = vec![
            Invoked::Value(vec![1, 2]),
            Invoked::Failed(vec![3]),
            call(|| -> Result<Vec<u8>, Vec<u8>> { panic!("oops") }),
            Invoked::BadInput(CodecError::Malformed(
                "the input could not be decoded".into(),
            )),
            Invoked::Unencodable(CodecError::Encode("the output could not be encoded".into())),
        ];
        for outcome in outcomes {
            let (kind, body) = outcome.into_frame();
            let back = Invoked::from_frame(kind, &body);
            assert_eq!(back.into_frame(), (kind, body));
        }
        let (kind, body) =
            Invoked::<Vec<u8>, Vec<u8>>::Unencodable(CodecError::TrailingBytes { unread: 2 })
                .into_frame();
        assert_eq!(kind, Answer::Unencodable);
        assert!(String::from_utf8(body).unwrap().contains('2'));
    }
}
