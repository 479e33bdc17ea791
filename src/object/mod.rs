//! Serde views of the Kubernetes objects the webhook reads (pods, workloads, ServiceAccounts)
//! and the table of kinds it knows. Below both [`crate::admission`] and [`crate::policy`]: the
//! webhook, `check` and `audit` read objects the same way.
//!
//! The views hold only what a decision reads; serde skips everything else and nothing is ever
//! re-serialised from them, so nothing in an object can be lost. They borrow their strings
//! from the JSON text they were read from ([`Text`]).

mod bounded;
mod kind;
pub(crate) mod map_only;
mod view;

use std::borrow::{Borrow, Cow};
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

pub use bounded::{MAX_LIST_ENTRIES, MAX_OBJECT_ENTRIES, read_bounded};
pub use kind::Kind;
pub use view::{
    ContainerView, EnvView, MIRROR_ANNOTATION, MetaView, MountView, Named, ObjectView, SpecView,
    TemplateView,
};

/// A string read from JSON text: a slice of the text when it had no escapes to undo (nearly
/// always), else its own copy. A newtype because serde borrows a bare `Cow<str>` field but not
/// one inside an `Option`, a `Vec` or a map.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl Text<'_> {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}
