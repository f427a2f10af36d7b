//! The knowledge base's document events on the wire.

use devart_domain::document::DocumentEvent;
use devart_domain::DomainError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Wire;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentAdded {
    pub id: Uuid,
    pub title: String,
    /// Markdown.
    pub content: String,
    pub tags: Vec<String>,
    /// Empty when nobody said.
    pub source: String,
    /// A JSON object's compact text.
    pub metadata: String,
}

/// Only the fields that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentUpdated {
    pub title: Option<String>,
    pub content: Option<String>,
    pub source: Option<String>,
    pub metadata: Option<String>,
}

/// The full new set of tags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentTagged {
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRemoved {}

impl From<DocumentEvent> for Wire {
    fn from(event: DocumentEvent) -> Wire {
        match event {
            DocumentEvent::Added { id, title, content, tags, source, metadata } => {
                DocumentAdded { id, title, content, tags, source, metadata }.into()
            }
            DocumentEvent::Updated { title, content, source, metadata } => {
                DocumentUpdated { title, content, source, metadata }.into()
            }
            DocumentEvent::Tagged { tags } => DocumentTagged { tags }.into(),
            DocumentEvent::Removed => DocumentRemoved {}.into(),
        }
    }
}

impl TryFrom<DocumentAdded> for DocumentEvent {
    type Error = DomainError;
    fn try_from(w: DocumentAdded) -> Result<Self, DomainError> {
        Ok(DocumentEvent::Added {
            id: w.id,
            title: w.title,
            content: w.content,
            tags: w.tags,
            source: w.source,
            metadata: w.metadata,
        })
    }
}

impl TryFrom<DocumentUpdated> for DocumentEvent {
    type Error = DomainError;
    fn try_from(w: DocumentUpdated) -> Result<Self, DomainError> {
        Ok(DocumentEvent::Updated { title: w.title, content: w.content, source: w.source, metadata: w.metadata })
    }
}

impl TryFrom<DocumentTagged> for DocumentEvent {
    type Error = DomainError;
    fn try_from(w: DocumentTagged) -> Result<Self, DomainError> {
        Ok(DocumentEvent::Tagged { tags: w.tags })
    }
}

impl TryFrom<DocumentRemoved> for DocumentEvent {
    type Error = DomainError;
    fn try_from(_: DocumentRemoved) -> Result<Self, DomainError> {
        Ok(DocumentEvent::Removed)
    }
}
