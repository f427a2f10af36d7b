//! The knowledge base's documents: Markdown text with a title, tags, a source and metadata,
//! added, changed, tagged and removed by the people (and, when a setting allows, the agents) who
//! keep it.
//!
//! Commands carry validated values ([`Content`], [`Tags`], [`Source`], [`Metadata`], and the
//! task's [`Title`]); events carry their plain forms. A document's text is split into searchable
//! pieces by [`chunks::split`], a pure function the read side calls on each content change.

pub mod chunks;

use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainError};
pub use crate::task::Title;

/// A document's text: Markdown, 1 byte to 1 MiB, no NUL characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(String);

impl Content {
    pub const BYTES_MAX: usize = 1024 * 1024;

    pub fn parse(value: &str) -> Result<Content, DomainError> {
        if value.trim().is_empty() {
            return Err(DomainError::invalid("content", "must not be empty"));
        }
        if value.len() > Self::BYTES_MAX {
            return Err(DomainError::invalid(
                "content",
                format!("must be at most {} bytes, got {}", Self::BYTES_MAX, value.len()),
            ));
        }
        if value.contains('\0') {
            return Err(DomainError::invalid("content", "must not contain NUL characters"));
        }
        Ok(Content(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A document's tags: at most 32, each 1 to 64 characters of `a-z0-9-_./:` (lower-cased first),
/// deduplicated and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tags(Vec<String>);

impl Tags {
    pub const COUNT_MAX: usize = 32;
    pub const LEN_MAX: usize = 64;

    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Tags, DomainError> {
        let mut tags = Vec::with_capacity(values.len());
        for value in values {
            let tag = value.as_ref().trim().to_lowercase();
            if tag.is_empty() || tag.chars().count() > Self::LEN_MAX {
                return Err(DomainError::invalid(
                    "tags",
                    format!("each tag must be 1 to {} characters", Self::LEN_MAX),
                ));
            }
            if let Some(bad) =
                tag.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "-_./:".contains(*c)))
            {
                return Err(DomainError::invalid(
                    "tags",
                    format!("tag `{tag}` holds `{bad}`; tags are made of a-z, 0-9 and - _ . / :"),
                ));
            }
            tags.push(tag);
        }
        tags.sort();
        tags.dedup();
        if tags.len() > Self::COUNT_MAX {
            return Err(DomainError::invalid("tags", format!("at most {} tags, got {}", Self::COUNT_MAX, tags.len())));
        }
        Ok(Tags(tags))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.clone()
    }
}

/// Where a document comes from (a URL, a path, a name): trimmed, at most 500 characters, no
/// control characters; empty when nobody says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source(String);

impl Source {
    pub const LEN_MAX: usize = 500;

    pub fn parse(value: &str) -> Result<Source, DomainError> {
        let value = value.trim();
        if value.chars().count() > Self::LEN_MAX {
            return Err(DomainError::invalid("source", format!("must be at most {} characters", Self::LEN_MAX)));
        }
        if value.chars().any(char::is_control) {
            return Err(DomainError::invalid("source", "must not contain control characters"));
        }
        Ok(Source(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-form metadata: a JSON object, kept as its compact text, at most 64 KiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata(String);

impl Default for Metadata {
    fn default() -> Self {
        Metadata("{}".to_owned())
    }
}

impl Metadata {
    pub const BYTES_MAX: usize = 64 * 1024;

    pub fn parse(value: &str) -> Result<Metadata, DomainError> {
        if value.len() > Self::BYTES_MAX {
            return Err(DomainError::invalid("metadata", format!("must be at most {} bytes", Self::BYTES_MAX)));
        }
        match serde_json::from_str::<serde_json::Value>(value) {
            Ok(object @ serde_json::Value::Object(_)) => Ok(Metadata(object.to_string())),
            Ok(_) => Err(DomainError::invalid("metadata", "must be a JSON object")),
            Err(e) => Err(DomainError::invalid("metadata", format!("is not JSON: {e}"))),
        }
    }

    /// From a JSON value already parsed (the API's scalar).
    pub fn from_value(value: &serde_json::Value) -> Result<Metadata, DomainError> {
        if !value.is_object() {
            return Err(DomainError::invalid("metadata", "must be a JSON object"));
        }
        Metadata::parse(&value.to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DocumentStatus {
    #[default]
    Absent,
    Live,
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DocumentState {
    pub id: Uuid,
    pub status: DocumentStatus,
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    pub source: String,
    /// A JSON object's text.
    pub metadata: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddDocument {
    pub id: Uuid,
    pub title: Title,
    pub content: Content,
    pub tags: Tags,
    pub source: Source,
    pub metadata: Metadata,
}

/// A change of some fields; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateDocument {
    pub title: Option<Title>,
    pub content: Option<Content>,
    pub source: Option<Source>,
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentCommand {
    Add(AddDocument),
    Update(UpdateDocument),
    /// The full new set of tags.
    Tag(Tags),
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentEvent {
    Added {
        id: Uuid,
        title: String,
        content: String,
        tags: Vec<String>,
        source: String,
        metadata: String,
    },
    /// Only the fields that changed.
    Updated {
        title: Option<String>,
        content: Option<String>,
        source: Option<String>,
        metadata: Option<String>,
    },
    Tagged {
        tags: Vec<String>,
    },
    Removed,
}

impl DocumentEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            DocumentEvent::Added { .. } => "DocumentAdded",
            DocumentEvent::Updated { .. } => "DocumentUpdated",
            DocumentEvent::Tagged { .. } => "DocumentTagged",
            DocumentEvent::Removed => "DocumentRemoved",
        }
    }
}

pub struct Document;

impl Aggregate for Document {
    const KIND: &'static str = "document";
    type State = DocumentState;
    type Command = DocumentCommand;
    type Event = DocumentEvent;

    /// An update that changes nothing, or tags as they are, record nothing. A removed document is
    /// gone: every command on it but adding answers not found, and adding it again conflicts.
    fn decide(state: &DocumentState, command: &DocumentCommand) -> Result<Vec<DocumentEvent>, DomainError> {
        use DocumentCommand as C;
        use DocumentStatus as S;
        match (state.status, command) {
            (S::Absent, C::Add(c)) => Ok(vec![DocumentEvent::Added {
                id: c.id,
                title: c.title.as_str().to_owned(),
                content: c.content.as_str().to_owned(),
                tags: c.tags.to_strings(),
                source: c.source.as_str().to_owned(),
                metadata: c.metadata.as_str().to_owned(),
            }]),
            (_, C::Add(c)) => Err(DomainError::Conflict(format!("document {} already exists", c.id))),
            (S::Absent | S::Removed, _) => Err(DomainError::NotFound(format!("document {}", state.id))),
            (S::Live, C::Update(u)) => {
                let changed = |new: Option<&str>, old: &str| new.filter(|n| *n != old).map(str::to_owned);
                let title = changed(u.title.as_ref().map(Title::as_str), &state.title);
                let content = changed(u.content.as_ref().map(Content::as_str), &state.content);
                let source = changed(u.source.as_ref().map(Source::as_str), &state.source);
                let metadata = changed(u.metadata.as_ref().map(Metadata::as_str), &state.metadata);
                if title.is_none() && content.is_none() && source.is_none() && metadata.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![DocumentEvent::Updated { title, content, source, metadata }])
            }
            (S::Live, C::Tag(tags)) => Ok(if tags.as_slice() == state.tags.as_slice() {
                vec![]
            } else {
                vec![DocumentEvent::Tagged { tags: tags.to_strings() }]
            }),
            (S::Live, C::Remove) => Ok(vec![DocumentEvent::Removed]),
        }
    }

    fn evolve(mut state: DocumentState, event: &DocumentEvent) -> DocumentState {
        match event {
            DocumentEvent::Added { id, title, content, tags, source, metadata } => {
                state = DocumentState {
                    id: *id,
                    status: DocumentStatus::Live,
                    title: title.clone(),
                    content: content.clone(),
                    tags: tags.clone(),
                    source: source.clone(),
                    metadata: metadata.clone(),
                };
            }
            DocumentEvent::Updated { title, content, source, metadata } => {
                for (new, old) in [
                    (title, &mut state.title),
                    (content, &mut state.content),
                    (source, &mut state.source),
                    (metadata, &mut state.metadata),
                ] {
                    if let Some(new) = new {
                        old.clone_from(new);
                    }
                }
            }
            DocumentEvent::Tagged { tags } => state.tags.clone_from(tags),
            DocumentEvent::Removed => state.status = DocumentStatus::Removed,
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    const ID: Uuid = Uuid::from_u128(0xd0c);

    fn added() -> DocumentEvent {
        DocumentEvent::Added {
            id: ID,
            title: "Deploys".into(),
            content: "# Deploys\n\nRoll back with `make rollback`.".into(),
            tags: vec!["ops".into(), "runbook".into()],
            source: "wiki/deploys".into(),
            metadata: r#"{"owner":"ops"}"#.into(),
        }
    }

    fn add() -> DocumentCommand {
        DocumentCommand::Add(AddDocument {
            id: ID,
            title: Title::parse(" Deploys ").unwrap(),
            content: Content::parse("# Deploys\n\nRoll back with `make rollback`.").unwrap(),
            tags: Tags::parse(&["runbook", "OPS", "ops"]).unwrap(),
            source: Source::parse("wiki/deploys").unwrap(),
            metadata: Metadata::parse(r#"{ "owner": "ops" }"#).unwrap(),
        })
    }

    #[test]
    fn adding_records_the_validated_values_once() {
        given::<Document>([]).when(add()).then([added()]);
        given::<Document>([added()])
            .when(add())
            .then_error(DomainError::Conflict(format!("document {ID} already exists")));
    }

    #[test]
    fn an_update_records_only_what_changed() {
        let update = UpdateDocument {
            title: Some(Title::parse("Deploys").unwrap()),
            content: Some(Content::parse("new text").unwrap()),
            ..UpdateDocument::default()
        };
        given::<Document>([added()]).when(DocumentCommand::Update(update)).then([DocumentEvent::Updated {
            title: None,
            content: Some("new text".into()),
            source: None,
            metadata: None,
        }]);
        let same = UpdateDocument { source: Some(Source::parse("wiki/deploys").unwrap()), ..UpdateDocument::default() };
        given::<Document>([added()]).when(DocumentCommand::Update(same)).then([]);
        let state = Document::fold(&[
            added(),
            DocumentEvent::Updated { title: Some("T".into()), content: None, source: None, metadata: None },
        ]);
        assert_eq!((state.title.as_str(), state.source.as_str()), ("T", "wiki/deploys"));
    }

    #[test]
    fn tags_are_replaced_as_a_set_and_the_same_set_records_nothing() {
        let tags = Tags::parse(&["runbook", "ops"]).unwrap();
        given::<Document>([added()]).when(DocumentCommand::Tag(tags)).then([]);
        let tags = Tags::parse(&["k8s"]).unwrap();
        given::<Document>([added()])
            .when(DocumentCommand::Tag(tags))
            .then([DocumentEvent::Tagged { tags: vec!["k8s".into()] }]);
    }

    #[test]
    fn a_removed_document_is_gone() {
        given::<Document>([added()]).when(DocumentCommand::Remove).then([DocumentEvent::Removed]);
        let gone = DomainError::NotFound(format!("document {ID}"));
        given::<Document>([added(), DocumentEvent::Removed]).when(DocumentCommand::Remove).then_error(gone.clone());
        given::<Document>([added(), DocumentEvent::Removed])
            .when(DocumentCommand::Tag(Tags::default()))
            .then_error(gone);
        given::<Document>([added(), DocumentEvent::Removed])
            .when(add())
            .then_error(DomainError::Conflict(format!("document {ID} already exists")));
        given::<Document>([])
            .when(DocumentCommand::Remove)
            .then_error(DomainError::NotFound(format!("document {}", Uuid::nil())));
    }

    #[test]
    fn values_refuse_what_is_out_of_bounds_naming_their_field() {
        let field = |e: DomainError| match e {
            DomainError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(Content::parse("  ").unwrap_err()), "content");
        assert_eq!(field(Content::parse(&"x".repeat(Content::BYTES_MAX + 1)).unwrap_err()), "content");
        assert!(Content::parse(&"x".repeat(Content::BYTES_MAX)).is_ok());
        assert_eq!(field(Tags::parse(&["has space"]).unwrap_err()), "tags");
        assert_eq!(field(Tags::parse(&[""]).unwrap_err()), "tags");
        assert_eq!(field(Tags::parse(&["x".repeat(65)]).unwrap_err()), "tags");
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert_eq!(field(Tags::parse(&many).unwrap_err()), "tags");
        assert_eq!(Tags::parse(&["B", "a", "b", "x/y:z.1_2-3"]).unwrap().as_slice(), ["a", "b", "x/y:z.1_2-3"]);
        assert_eq!(field(Source::parse(&"s".repeat(501)).unwrap_err()), "source");
        assert_eq!(field(Metadata::parse("[1]").unwrap_err()), "metadata");
        assert_eq!(field(Metadata::parse("{").unwrap_err()), "metadata");
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(Metadata::BYTES_MAX));
        assert_eq!(field(Metadata::parse(&big).unwrap_err()), "metadata");
        assert_eq!(Metadata::parse(r#"{ "b": 1 }"#).unwrap().as_str(), r#"{"b":1}"#);
    }
}
