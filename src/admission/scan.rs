//! The admission endpoints' reader: an AdmissionReview and its object read in one hand-written
//! pass, into the same view serde builds (`Review<PodView>` on `/mutate`, `Review<ObjectView>`
//! on `/validate`).
//!
//! Why: serde_json spent most of a pod's read on what the view does not hold (`managedFields`,
//! tolerations, the `kube-api-access` volume, the container's image and resources...), walking
//! it token by token through its generic visitor. Here skipping is a validating scan that
//! crosses the inside of a string eight bytes at a time.
//!
//! It reads the shape the API server sends and nothing else. Anything unusual (invalid JSON
//! anywhere, a duplicate field, `null` where the view wants a value, nesting deeper than
//! serde_json allows) makes it answer `None`, and the caller
//! reads the body with serde as before, which also gives the precise error. It never decides
//! anything serde would decide differently: the tests hold the two to the same view on every
//! capture, on every truncation of one, and on variants of them.

use std::borrow::Cow;

use super::pod::{ContainerView, EnvView, MetaView, MountView, Named, PodView, SpecView};
use super::review::{
    AdmissionRequest, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
};
use super::text::{RawText, StrMap, Text};
use crate::policy::workload::{ObjectView, Shape, SpecRead, WorkloadKind};

/// serde_json's nesting limit; deeper input is left to it (it refuses it).
const MAX_DEPTH: usize = 128;

/// What a review reads to: `apiVersion`, `kind` and the request, for `Review::checked`.
pub type ReviewParts<'a, O> = (
    Option<Text<'a>>,
    Option<Text<'a>>,
    Option<AdmissionRequest<'a, O>>,
);

/// Reads a review whose object is a pod; `None` when the body is not of the usual shape (see
/// the module's comment), never a different reading.
pub fn pod_review(body: &str) -> Option<ReviewParts<'_, PodView<'_>>> {
    review(body, Reader::pod)
}

/// Reads a review whose object is read as an [`ObjectView`] (any object `/validate` checks);
/// `None` as for [`pod_review`].
pub fn object_review(body: &str) -> Option<ReviewParts<'_, ObjectView<'_>>> {
    review(body, Reader::object_view)
}

fn review<'a, O>(
    body: &'a str,
    object: fn(&mut Reader<'a>, usize) -> Option<O>,
) -> Option<ReviewParts<'a, O>> {
    let mut r = Reader::new(body);
    let (mut api_version, mut kind, mut request) = (None, None, None);
    let mut seen = Seen::default();
    r.fields(0, |r, key, depth| match key {
        "apiVersion" => r.once(&mut seen, 0, |r| {
            r.opt(|r| r.text()).map(|v| api_version = v)
        }),
        "kind" => r.once(&mut seen, 1, |r| r.opt(|r| r.text()).map(|v| kind = v)),
        "request" => r.once(&mut seen, 2, |r| {
            r.opt(|r| r.request(depth, object)).map(|v| request = v)
        }),
        _ => r.skip(depth),
    })?;
    r.ws();
    // Only whitespace may follow the document.
    (r.i == r.b.len()).then_some((api_version, kind, request))
}

/// An object's member name as written (quotes included).
struct Key<'a> {
    literal: &'a str,
    escaped: bool,
}

impl<'a> Key<'a> {
    /// The name, escapes undone as serde undoes them before matching a field.
    fn name(&self) -> Option<Cow<'a, str>> {
        if self.escaped {
            serde_json::from_str::<String>(self.literal)
                .ok()
                .map(Cow::Owned)
        } else {
            Some(Cow::Borrowed(&self.literal[1..self.literal.len() - 1]))
        }
    }
}

/// Which fields of one object were read already (serde refuses a duplicate field).
#[derive(Default)]
struct Seen(u32);

struct Reader<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        // The API server sends compact JSON: no whitespace to pass over, most of the time.
        match self.b.get(self.i) {
            Some(&c) if c > b' ' => Some(c),
            _ => {
                self.ws();
                self.b.get(self.i).copied()
            }
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Reads field number `bit` of an object with `read`, refusing it the second time.
    fn once(
        &mut self,
        seen: &mut Seen,
        bit: u32,
        read: impl FnOnce(&mut Self) -> Option<()>,
    ) -> Option<()> {
        if seen.0 & (1 << bit) != 0 {
            return None;
        }
        seen.0 |= 1 << bit;
        read(self)
    }

    /// An optional value: `null` is `None` (as serde reads `Option`), anything else `read`.
    fn opt<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        read(self).map(Some)
    }

    /// At a string: its literal's bounds (quotes included) and whether it has escapes.
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            i = plain_run(self.b, i);
            match *self.b.get(i)? {
                b'"' => {
                    self.i = i + 1;
                    return Some((start, i + 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match *self.b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let hex = self.b.get(i + 2..i + 6)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                // A raw control character: not JSON.
                _ => return None,
            }
        }
    }

    /// A string value, borrowed unless it had escapes to undo.
    fn text(&mut self) -> Option<Text<'a>> {
        let (start, end, escaped) = self.string()?;
        if !escaped {
            return Some(Text::borrowed(&self.text[start + 1..end - 1]));
        }
        // serde_json undoes them (and refuses what it refuses, a lone surrogate included).
        serde_json::from_str::<String>(&self.text[start..end])
            .ok()
            .map(Text::owned)
    }

    fn raw_text(&mut self) -> Option<RawText<'a>> {
        let (start, end, _) = self.string()?;
        Some(RawText::from_literal(&self.text[start..end]))
    }

    fn boolean(&mut self) -> Option<bool> {
        match self.peek()? {
            b't' => self.literal(b"true").map(|()| true),
            b'f' => self.literal(b"false").map(|()| false),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? == word {
            self.i += word.len();
            Some(())
        } else {
            None
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        let digits = |b: &[u8], mut i: usize| {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i
        };
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match *b.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i = digits(b, i),
            _ => return None,
        }
        if b.get(i) == Some(&b'.') {
            let after = digits(b, i + 1);
            if after == i + 1 {
                return None;
            }
            i = after;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let after = digits(b, i);
            if after == i {
                return None;
            }
            i = after;
        }
        self.i = i;
        Some(())
    }

    /// Any value, checked and passed over; `depth` is the nesting of the value's container.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth, |r, _, depth| r.skip(depth)),
            b'[' => self.array(depth, |r, depth| r.skip(depth)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object, `member(reader, key, depth)` reading each member's value.
    fn object(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, Key<'a>, usize) -> Option<()>,
    ) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let (start, end, escaped) = self.string()?;
            let key = Key {
                literal: &self.text[start..end],
                escaped,
            };
            self.eat(b':')?;
            member(self, key, depth + 1)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// An object whose members are told apart by name (a struct of the view).
    fn fields(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &str, usize) -> Option<()>,
    ) -> Option<()> {
        self.object(depth, |r, key, depth| member(r, &key.name()?, depth))
    }

    /// An array, `item(reader, depth)` reading each element.
    fn array(
        &mut self,
        depth: usize,
        mut item: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        if depth >= MAX_DEPTH {
            return None;
        }
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            item(self, depth + 1)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A struct of the view, `member(reader, view, seen, name, depth)` reading the fields it
    /// knows into `view` (each once) and passing over the rest.
    fn view<T: Default>(
        &mut self,
        depth: usize,
        mut member: impl FnMut(&mut Self, &mut T, &mut Seen, &str, usize) -> Option<()>,
    ) -> Option<T> {
        let mut view = T::default();
        let mut seen = Seen::default();
        self.fields(depth, |r, key, depth| {
            member(r, &mut view, &mut seen, key, depth)
        })?;
        Some(view)
    }

    /// A list of objects read by `read`.
    fn list<T>(
        &mut self,
        depth: usize,
        mut read: impl FnMut(&mut Self, usize) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut items = Vec::new();
        self.array(depth, |r, depth| {
            items.push(read(r, depth)?);
            Some(())
        })?;
        Some(items)
    }

    /// A map of strings, keys unescaped as serde reads them, in order (duplicates kept).
    fn map<V>(
        &mut self,
        depth: usize,
        mut value: impl FnMut(&mut Self) -> Option<V>,
    ) -> Option<StrMap<'a, V>> {
        if depth >= MAX_DEPTH {
            return None;
        }
        let mut members = Vec::new();
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(StrMap::from_members(members));
        }
        loop {
            let key = self.text()?;
            self.eat(b':')?;
            members.push((key, value(self)?));
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(StrMap::from_members(members));
                }
                _ => return None,
            }
        }
    }

    fn request<O>(
        &mut self,
        depth: usize,
        read_object: fn(&mut Self, usize) -> Option<O>,
    ) -> Option<AdmissionRequest<'a, O>> {
        let mut seen = Seen::default();
        let (mut uid, mut kind, mut operation) = (None, None, None);
        let mut resource = GroupVersionResource::default();
        let (mut sub_resource, mut name, mut namespace) = (None, None, None);
        let mut user_info = UserInfo::default();
        let (mut object, mut dry_run) = (None, None);
        self.fields(depth, |r, key, depth| match key {
            "uid" => r.once(&mut seen, 0, |r| r.text().map(|v| uid = Some(v))),
            "kind" => r.once(&mut seen, 1, |r| r.gvk(depth).map(|v| kind = Some(v))),
            "resource" => r.once(&mut seen, 2, |r| r.gvr(depth).map(|v| resource = v)),
            "subResource" => r.once(&mut seen, 3, |r| {
                r.opt(Self::text).map(|v| sub_resource = v)
            }),
            "name" => r.once(&mut seen, 4, |r| r.opt(Self::text).map(|v| name = v)),
            "namespace" => r.once(&mut seen, 5, |r| r.opt(Self::text).map(|v| namespace = v)),
            "operation" => r.once(&mut seen, 6, |r| r.operation().map(|v| operation = Some(v))),
            "userInfo" => r.once(&mut seen, 7, |r| r.user_info(depth).map(|v| user_info = v)),
            "object" => r.once(&mut seen, 8, |r| {
                r.opt(|r| read_object(r, depth)).map(|v| object = v)
            }),
            "dryRun" => r.once(&mut seen, 9, |r| r.opt(Self::boolean).map(|v| dry_run = v)),
            _ => r.skip(depth),
        })?;
        Some(AdmissionRequest {
            uid: uid?,
            kind: kind?,
            resource,
            sub_resource,
            name,
            namespace,
            operation: operation?,
            user_info,
            object,
            dry_run,
        })
    }

    fn operation(&mut self) -> Option<Operation> {
        let (start, end, escaped) = self.string()?;
        if escaped {
            return None;
        }
        match &self.text[start + 1..end - 1] {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }

    fn gvk(&mut self, depth: usize) -> Option<GroupVersionKind<'a>> {
        self.view(
            depth,
            |r, v: &mut GroupVersionKind<'a>, seen, key, depth| match key {
                "group" => r.once(seen, 0, |r| r.text().map(|t| v.group = t)),
                "version" => r.once(seen, 1, |r| r.text().map(|t| v.version = t)),
                "kind" => r.once(seen, 2, |r| r.text().map(|t| v.kind = t)),
                _ => r.skip(depth),
            },
        )
    }

    fn gvr(&mut self, depth: usize) -> Option<GroupVersionResource<'a>> {
        self.view(
            depth,
            |r, v: &mut GroupVersionResource<'a>, seen, key, depth| match key {
                "group" => r.once(seen, 0, |r| r.text().map(|t| v.group = t)),
                "version" => r.once(seen, 1, |r| r.text().map(|t| v.version = t)),
                "resource" => r.once(seen, 2, |r| r.text().map(|t| v.resource = t)),
                _ => r.skip(depth),
            },
        )
    }

    fn user_info(&mut self, depth: usize) -> Option<UserInfo<'a>> {
        self.view(
            depth,
            |r, v: &mut UserInfo<'a>, seen, key, depth| match key {
                "username" => r.once(seen, 0, |r| {
                    r.opt(Self::text)
                        .map(|t| v.username = t.map(Text::into_cow))
                }),
                _ => r.skip(depth),
            },
        )
    }

    /// An object of `/validate`, as `ObjectView` reads it: its own `kind` (written before
    /// `spec` by the API server) says where the pod spec is; a `spec` before any `kind`, or of
    /// a kind whose pods are not checked, is passed over.
    fn object_view(&mut self, depth: usize) -> Option<ObjectView<'a>> {
        let mut shape: Option<Option<Shape>> = None;
        let (mut metadata, mut spec) = (None, None);
        self.fields(depth, |r, key, depth| {
            match key {
                "kind" if shape.is_none() => {
                    let kind = r.text()?;
                    shape = Some(WorkloadKind::from_name(&kind).map(WorkloadKind::shape));
                }
                "metadata" if metadata.is_none() => metadata = Some(r.metadata(depth)?),
                "spec" if spec.is_none() => {
                    spec = Some(match shape.flatten() {
                        Some(Shape::Pod) => SpecRead::Read(Shape::Pod, r.spec(depth)?),
                        Some(Shape::Template) => {
                            SpecRead::Read(Shape::Template, r.template_spec(depth)?)
                        }
                        Some(Shape::CronJob) => {
                            SpecRead::Read(Shape::CronJob, r.cron_job_spec(depth)?)
                        }
                        None => {
                            r.skip(depth)?;
                            SpecRead::Skipped
                        }
                    })
                }
                // A second `kind`, `metadata` or `spec`: serde refuses it.
                "kind" | "metadata" | "spec" => return None,
                _ => r.skip(depth)?,
            }
            Some(())
        })?;
        Some(ObjectView::from_parts(
            metadata.unwrap_or_default(),
            spec.unwrap_or_default(),
        ))
    }

    /// The pod spec in `{"template": {"spec": ...}}` (a workload's `spec`).
    fn template_spec(&mut self, depth: usize) -> Option<SpecView<'a>> {
        self.only_field(depth, "template", |r, depth| {
            r.only_field(depth, "spec", Self::spec)
        })
    }

    /// The pod spec in a CronJob's `spec`: `{"jobTemplate": {"spec": {"template": {"spec": ...}}}}`.
    fn cron_job_spec(&mut self, depth: usize) -> Option<SpecView<'a>> {
        self.only_field(depth, "jobTemplate", |r, depth| {
            r.only_field(depth, "spec", Self::template_spec)
        })
    }

    /// The one field `name` of an object read by `read` (absent: the default), the rest passed
    /// over.
    fn only_field<T: Default>(
        &mut self,
        depth: usize,
        name: &str,
        read: fn(&mut Self, usize) -> Option<T>,
    ) -> Option<T> {
        self.view(depth, |r, v: &mut T, seen, key, depth| {
            if key == name {
                r.once(seen, 0, |r| read(r, depth).map(|t| *v = t))
            } else {
                r.skip(depth)
            }
        })
    }

    fn pod(&mut self, depth: usize) -> Option<PodView<'a>> {
        self.view(
            depth,
            |r, v: &mut PodView<'a>, seen, key, depth| match key {
                "metadata" => r.once(seen, 0, |r| r.metadata(depth).map(|m| v.metadata = m)),
                "spec" => r.once(seen, 1, |r| r.spec(depth).map(|s| v.spec = s)),
                _ => r.skip(depth),
            },
        )
    }

    fn metadata(&mut self, depth: usize) -> Option<MetaView<'a>> {
        self.view(
            depth,
            |r, v: &mut MetaView<'a>, seen, key, depth| match key {
                "name" => r.once(seen, 0, |r| r.opt(Self::text).map(|t| v.name = t)),
                "generateName" => {
                    r.once(seen, 1, |r| r.opt(Self::text).map(|t| v.generate_name = t))
                }
                "namespace" => r.once(seen, 2, |r| r.opt(Self::text).map(|t| v.namespace = t)),
                "labels" => r.once(seen, 3, |r| {
                    r.opt(|r| r.map(depth, Self::text)).map(|m| v.labels = m)
                }),
                "annotations" => r.once(seen, 4, |r| {
                    r.opt(|r| r.map(depth, Self::raw_text))
                        .map(|m| v.annotations = m)
                }),
                _ => r.skip(depth),
            },
        )
    }

    fn spec(&mut self, depth: usize) -> Option<SpecView<'a>> {
        self.view(
            depth,
            |r, v: &mut SpecView<'a>, seen, key, depth| match key {
                "serviceAccountName" => r.once(seen, 0, |r| {
                    r.opt(Self::text).map(|t| v.service_account_name = t)
                }),
                "serviceAccount" => r.once(seen, 1, |r| {
                    r.opt(Self::text).map(|t| v.service_account = t)
                }),
                "containers" => r.once(seen, 2, |r| {
                    r.opt(|r| r.list(depth, Self::container))
                        .map(|c| v.containers = c)
                }),
                "initContainers" => r.once(seen, 3, |r| {
                    r.opt(|r| r.list(depth, Self::container))
                        .map(|c| v.init_containers = c)
                }),
                "volumes" => r.once(seen, 4, |r| {
                    r.opt(|r| r.list(depth, Self::named)).map(|l| v.volumes = l)
                }),
                "nodeSelector" => r.once(seen, 5, |r| {
                    r.opt(|r| r.map(depth, Self::text))
                        .map(|m| v.node_selector = m)
                }),
                "hostNetwork" => r.once(seen, 6, |r| {
                    r.opt(Self::boolean).map(|b| v.host_network = b)
                }),
                _ => r.skip(depth),
            },
        )
    }

    fn container(&mut self, depth: usize) -> Option<ContainerView<'a>> {
        self.view(
            depth,
            |r, v: &mut ContainerView<'a>, seen, key, depth| match key {
                "name" => r.once(seen, 0, |r| r.text().map(|t| v.name = t)),
                "env" => r.once(seen, 1, |r| {
                    r.opt(|r| r.list(depth, Self::env)).map(|e| v.env = e)
                }),
                "volumeMounts" => r.once(seen, 2, |r| {
                    r.opt(|r| r.list(depth, Self::mount))
                        .map(|m| v.volume_mounts = m)
                }),
                _ => r.skip(depth),
            },
        )
    }

    fn env(&mut self, depth: usize) -> Option<EnvView<'a>> {
        self.view(
            depth,
            |r, v: &mut EnvView<'a>, seen, key, depth| match key {
                "name" => r.once(seen, 0, |r| r.text().map(|t| v.name = t)),
                "value" => r.once(seen, 1, |r| r.opt(Self::text).map(|t| v.value = t)),
                _ => r.skip(depth),
            },
        )
    }

    fn mount(&mut self, depth: usize) -> Option<MountView<'a>> {
        self.view(
            depth,
            |r, v: &mut MountView<'a>, seen, key, depth| match key {
                "name" => r.once(seen, 0, |r| r.text().map(|t| v.name = t)),
                "mountPath" => r.once(seen, 1, |r| r.text().map(|t| v.mount_path = t)),
                _ => r.skip(depth),
            },
        )
    }

    fn named(&mut self, depth: usize) -> Option<Named<'a>> {
        self.view(depth, |r, v: &mut Named<'a>, seen, key, depth| match key {
            "name" => r.once(seen, 0, |r| r.text().map(|t| v.name = t)),
            _ => r.skip(depth),
        })
    }
}

/// The index of the first `"`, `\` or control character at or after `i` (or the length),
/// eight bytes at a time. In each word, a flagged byte's lowest set bit is exact: the tricks
/// below can only flag bytes falsely above a truly flagged one.
fn plain_run(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_le_bytes([b'\\'; 8]);
    const SPACES: u64 = u64::from_le_bytes([0x20; 8]);
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // Bytes below 0x20 borrow into their high bit when 0x20 is taken away (bytes from
        // 0x80 up are masked out by `!x`).
        let found = zero_bytes(x ^ QUOTES)
            | zero_bytes(x ^ BACKSLASHES)
            | (x.wrapping_sub(SPACES) & !x & HIGH);
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_string_scan_stops_at_quotes_backslashes_and_control_characters() {
        for (text, at) in [
            ("abcdefghijklmnop\"", 16),
            ("abc\\def", 3),
            ("abcdefghij\nk", 10),
            ("abcdefgh\u{7f}é\u{1}", 11),
            ("no end at all, twenty+", 22),
            ("", 0),
        ] {
            assert_eq!(plain_run(text.as_bytes(), 0), at, "{text:?}");
        }
    }

    #[test]
    fn the_word_scan_finds_what_a_byte_scan_finds() {
        let odd = [
            b'"', b'\\', 0x00, 0x01, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xc3, 0xff,
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..50_000 {
            let len = rng.usize(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| match rng.u8(..) {
                    0..200 => b'x',
                    _ => odd[rng.usize(..odd.len())],
                })
                .collect();
            let start = rng.usize(0..=len);
            let by_byte = (start..len)
                .find(|&i| matches!(bytes[i], b'"' | b'\\') || bytes[i] < 0x20)
                .unwrap_or(len);
            assert_eq!(plain_run(&bytes, start), by_byte, "{bytes:?} from {start}");
        }
    }

    #[test]
    fn numbers_follow_the_json_grammar() {
        for good in ["0", "-0", "12", "1.5", "-1.5e10", "2E-3", "1e+2"] {
            let mut r = Reader::new(good);
            assert_eq!(r.number(), Some(()), "{good}");
            assert_eq!(r.i, good.len(), "{good}");
        }
        for bad in ["-", ".5", "1.", "1e", "+1", "e5"] {
            let mut r = Reader::new(bad);
            assert!(r.number().is_none() || r.i < bad.len(), "{bad}");
        }
    }
}
