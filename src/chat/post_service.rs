//! Posts: the articles sessions are about, each owned by the user who added it.

use std::sync::Arc;

use crate::domain::{Post, PostExpanded, PostId, UserId};
use crate::store::Store;

use super::ChatError;

pub struct PostService {
    store: Arc<dyn Store>,
}

impl PostService {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Stores a new post of `owner`'s.
    pub async fn create(
        &self,
        owner: &UserId,
        url: String,
        title: String,
        expanded: PostExpanded,
    ) -> Result<Post, ChatError> {
        let post = Post {
            id: PostId::new(),
            owner: owner.clone(),
            url,
            title,
            expanded,
            created_at: crate::domain::now(),
        };
        self.store.insert_post(&post).await?;
        Ok(post)
    }

    /// The post, when it exists and belongs to `owner`; `NotFound` otherwise.
    pub async fn owned(&self, owner: &UserId, id: PostId) -> Result<Post, ChatError> {
        match self.store.get_post(id).await? {
            Some(post) if &post.owner == owner => Ok(post),
            _ => Err(ChatError::NotFound),
        }
    }
}
