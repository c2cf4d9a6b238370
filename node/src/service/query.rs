//! Handlers for compute-to-data: the peer API's `Query` service (provider side) and the
//! local API's `QueryAggregate` (consumer side).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::peer_with_role;
use super::errors::into_status;
use crate::base::bounded;
use crate::identity::MemberRole;
use crate::query::{self, Queries};
use liutong_proto::v1::query_server::Query;
use liutong_proto::v1::{AggregateRequest, AggregateResponse, QueryAggregateRequest};

pub struct QueryService {
    pub queries: Arc<Queries>,
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> Result<Response<AggregateResponse>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "sending an aggregate query")?;
        let AggregateRequest {
            agreement_id,
            query,
            purpose,
        } = request.into_inner();
        if agreement_id.trim().is_empty() {
            return Err(Status::invalid_argument("agreement_id: name the agreement"));
        }
        bounded::id("agreement_id", &agreement_id).map_err(into_status)?;
        check_query_text(query.as_ref()).map_err(into_status)?;
        let purpose = checked_purpose(&purpose).map_err(into_status)?;
        let parsed = query::query_from_proto(query.as_ref()).map_err(into_status)?;
        let answered = self
            .queries
            .answer(&caller, &agreement_id, purpose, parsed)
            .await
            .map_err(into_status)?;
        Ok(Response::new(query::answer_to_proto(&answered)))
    }
}

/// `Admin.QueryAggregate`.
pub(super) async fn send(
    queries: &Queries,
    request: QueryAggregateRequest,
) -> Result<AggregateResponse, Status> {
    if request.agreement_id.trim().is_empty() {
        return Err(Status::invalid_argument("agreement_id: name the agreement"));
    }
    bounded::id("agreement_id", &request.agreement_id).map_err(into_status)?;
    check_query_text(request.query.as_ref()).map_err(into_status)?;
    let purpose = checked_purpose(&request.purpose).map_err(into_status)?;
    queries
        .send(
            &request.agreement_id,
            &request.peer,
            purpose,
            request.query.as_ref(),
        )
        .await
        .map_err(into_status)
}

/// A declared purpose, bounded like every purpose; `None` when empty (the agreement's
/// own purpose applies).
fn checked_purpose(purpose: &str) -> Result<Option<&str>, bounded::FieldError> {
    let purpose = purpose.trim();
    if purpose.is_empty() {
        return Ok(None);
    }
    bounded::Text::parse("purpose", purpose, bounded::PURPOSE_MAX)?;
    Ok(Some(purpose))
}

/// Column names and filter values are text like a purpose: bounded, and without
/// control characters, since they are quoted in refusals and audit entries. (An empty
/// column is left to the query's own checks.)
fn check_query_text(
    query: Option<&liutong_proto::v1::AggregateQuery>,
) -> Result<(), bounded::FieldError> {
    let Some(q) = query else { return Ok(()) };
    let text = |field, value: &str| {
        if value.is_empty() {
            return Ok(());
        }
        bounded::Text::parse(field, value, bounded::PURPOSE_MAX).map(drop)
    };
    for a in &q.aggregations {
        text("aggregations.column", &a.column)?;
    }
    for g in &q.group_by {
        text("group_by", g)?;
    }
    for f in &q.filters {
        text("filters.column", &f.column)?;
        text("filters.value", &f.value)?;
    }
    Ok(())
}
