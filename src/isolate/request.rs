//! [`Request`]: replies typed per message, and [`IsolateHandle::request`].

use super::{Isolate, IsolateHandle};
use crate::error::AskError;
use crate::pending::Pending;

/// One kind of message to isolate `I`, with the type of its own answer: so
/// that [`IsolateHandle::request`] returns that type, not `I`'s whole
/// `Reply` enum to match at every call site.
///
/// An isolate whose messages want answers of different types keeps one
/// `Message` enum and one `Reply` enum; each request type says how it
/// becomes a message ([`into_message`](Self::into_message)) and which
/// reply answers it ([`from_reply`](Self::from_reply)). A reply of another
/// kind (the handler and the impl disagree) is a typed error,
/// [`AskError::WrongReply`], never a panic at the call site. No macro: two
/// short functions per request type.
///
/// # Examples
///
/// ```
/// use isolates::{Context, Isolate, Request};
/// use serde::{Deserialize, Serialize};
///
/// /// Keeps a text; answers its length, or the text in capitals.
/// struct Text(String);
///
/// #[derive(Serialize, Deserialize)]
/// struct Len;
/// #[derive(Serialize, Deserialize)]
/// struct Upper;
///
/// #[derive(Serialize, Deserialize)]
/// enum TextMsg { Len(Len), Upper(Upper) }
/// #[derive(Serialize, Deserialize)]
/// enum TextReply { Len(usize), Upper(String) }
///
/// impl Isolate for Text {
///     type Args = String;
///     type Message = TextMsg;
///     type Reply = TextReply;
///     type Error = String;
///     fn start(text: String, _: &mut Context<Self>) -> Result<Self, String> { Ok(Text(text)) }
///     fn handle(&mut self, msg: TextMsg, _: &mut Context<Self>) -> Result<TextReply, String> {
///         Ok(match msg {
///             TextMsg::Len(Len) => TextReply::Len(self.0.len()),
///             TextMsg::Upper(Upper) => TextReply::Upper(self.0.to_uppercase()),
///         })
///     }
/// }
///
/// impl Request<Text> for Len {
///     type Reply = usize;
///     fn into_message(self) -> TextMsg { TextMsg::Len(self) }
///     fn from_reply(reply: TextReply) -> Option<usize> {
///         match reply { TextReply::Len(n) => Some(n), _ => None }
///     }
/// }
///
/// impl Request<Text> for Upper {
///     type Reply = String;
///     fn into_message(self) -> TextMsg { TextMsg::Upper(self) }
///     fn from_reply(reply: TextReply) -> Option<String> {
///         match reply { TextReply::Upper(s) => Some(s), _ => None }
///     }
/// }
///
/// let text = Text::spawn("hello".into()).unwrap();
/// let len: usize = text.request(Len).wait().unwrap();
/// assert_eq!(len, 5);
/// assert_eq!(text.request(Upper).wait().as_deref(), Ok("HELLO"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a request to isolate `{I}`",
    label = "`{I}` has no `Request` impl for this",
    note = "implement `isolates::Request<{I}>` for `{Self}` (how it becomes `{I}`'s message, which reply answers it), or send `{I}`'s own message with `ask`"
)]
pub trait Request<I: Isolate>: Sized {
    /// What answers this request.
    type Reply;

    /// This request as the isolate's message.
    fn into_message(self) -> I::Message;

    /// This request's answer out of the isolate's reply, or `None` for a
    /// reply of another kind (which the asker gets as
    /// [`AskError::WrongReply`]).
    fn from_reply(reply: I::Reply) -> Option<Self::Reply>;
}

impl<I: Isolate> IsolateHandle<I> {
    /// Sends a typed [`Request`] and returns at once with a [`Pending`]
    /// answer of the request's own reply type: [`wait`](Pending::wait) for
    /// it (as [`ask`](Self::ask)), [`wait_timeout`](Pending::wait_timeout),
    /// poll it with [`try_take`](Pending::try_take) on a UI thread, or
    /// `.await` it. Sent as [`ask_pending`](Self::ask_pending) sends: it
    /// never blocks, and a full bounded mailbox resolves it to
    /// [`AskError::Full`] at once.
    ///
    /// The answer is taken out of the isolate's reply on the thread that
    /// takes the result; a reply of another kind resolves it to
    /// [`AskError::WrongReply`].
    ///
    /// # Examples
    ///
    /// See [`Request`].
    pub fn request<Q>(&self, request: Q) -> Pending<Q::Reply, AskError<I::Error>>
    where
        Q: Request<I> + 'static,
    {
        self.ask_pending_then(request.into_message(), |reply| {
            Q::from_reply(reply).ok_or(AskError::WrongReply {
                request: std::any::type_name::<Q>(),
            })
        })
    }
}
