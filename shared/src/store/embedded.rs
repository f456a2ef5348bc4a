//! TEMPORARY STUB
use super::*;
use std::time::Duration;
pub struct EmbeddedStore;
impl EmbeddedStore {
    pub fn open(_d: &std::path::Path, _c: &str) -> Result<Self, StoreError> {
        Err(StoreError::Corrupt("stub".into()))
    }
}
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        todo!()
    }
    fn insert<'a>(&'a self, _rec: &'a SagaRecord) -> BoxFuture<'a, Result<Inserted, StoreError>> {
        todo!()
    }
    fn get<'a>(&'a self, _id: &'a SagaId) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        todo!()
    }
    fn get_by_key<'a>(
        &'a self,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<SagaRecord>, StoreError>> {
        todo!()
    }
    fn replace<'a>(
        &'a self,
        _rec: &'a SagaRecord,
        _v: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        todo!()
    }
    fn list_by_status<'a>(
        &'a self,
        _s: &'a [Status],
        _l: usize,
    ) -> BoxFuture<'a, Result<Vec<SagaRecord>, StoreError>> {
        todo!()
    }
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        todo!()
    }
}
