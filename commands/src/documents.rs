//! The knowledge base's documents: `Stored for Document` and their commands,
//! `commands.documents()`.
//!
//! A document keeps no write-side rows: its chunks and search index are a read model
//! (`knowledge_chunks`), rebuilt from its events.

use devart_domain::document::{
    AddDocument, Content, Document, DocumentCommand, DocumentEvent, DocumentState, Metadata, Source, Tags, Title,
    UpdateDocument,
};
use devart_domain::{DomainError, Event};
use uuid::Uuid;

use crate::entry::Commands;
use crate::handler::CommandError;
use crate::store::{CommandContext, Folded, Stored};

impl Stored for Document {
    fn wrap(event: DocumentEvent) -> Event {
        Event::Document(event)
    }
    fn unwrap(event: &Event) -> Option<&DocumentEvent> {
        match event {
            Event::Document(e) => Some(e),
            _ => None,
        }
    }
}

/// The knowledge base's commands: `commands.documents()`.
#[derive(Clone, Copy)]
pub struct Documents<'a> {
    commands: &'a Commands,
}

impl Commands {
    /// The knowledge base's commands: adding, changing, tagging and removing documents.
    pub fn documents(&self) -> Documents<'_> {
        Documents { commands: self }
    }
}

/// A new document, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    pub title: Title,
    pub content: Content,
    pub tags: Tags,
    pub source: Source,
    pub metadata: Metadata,
}

impl Documents<'_> {
    /// Adds document `id`; a retried command id answers its first outcome.
    pub async fn add(
        self,
        id: Uuid,
        document: NewDocument,
        context: &CommandContext,
    ) -> Result<Folded<DocumentState>, CommandError> {
        let NewDocument { title, content, tags, source, metadata } = document;
        let command = DocumentCommand::Add(AddDocument { id, title, content, tags, source, metadata });
        self.commands.execute::<Document>(id, command, context, None).await
    }

    /// Changes the fields given; with `expected_version`, only if the document is still at it.
    pub async fn update(
        self,
        id: Uuid,
        update: UpdateDocument,
        expected_version: Option<u64>,
        context: &CommandContext,
    ) -> Result<Folded<DocumentState>, CommandError> {
        self.run(id, DocumentCommand::Update(update), expected_version, context).await
    }

    /// Replaces the document's tags with `tags`.
    pub async fn tag(
        self,
        id: Uuid,
        tags: Tags,
        context: &CommandContext,
    ) -> Result<Folded<DocumentState>, CommandError> {
        self.run(id, DocumentCommand::Tag(tags), None, context).await
    }

    /// Removes the document; its history stays.
    pub async fn remove(self, id: Uuid, context: &CommandContext) -> Result<Folded<DocumentState>, CommandError> {
        self.run(id, DocumentCommand::Remove, None, context).await
    }

    /// A command on an existing document, whose refusal names it.
    async fn run(
        self,
        id: Uuid,
        command: DocumentCommand,
        expected_version: Option<u64>,
        context: &CommandContext,
    ) -> Result<Folded<DocumentState>, CommandError> {
        self.commands.execute::<Document>(id, command, context, expected_version).await.map_err(|e| match e {
            CommandError::Domain(DomainError::NotFound(_)) => DomainError::NotFound(format!("document {id}")).into(),
            other => other,
        })
    }
}
