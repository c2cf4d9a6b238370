//! Compute-to-data (可用不可见): aggregates computed at the provider, raw rows never
//! leave it.
//!
//! For an agreement whose policy permits `aggregate` (typically an `aggregate`
//! permission with an `aggregateOnly` duty of minimum group size k), the consumer sends
//! a query for a purpose; the provider checks that the caller is the agreement's
//! consumer, asks usage control's gate ([`UsageGate`]: not revoked, the copy not
//! deleted, its deleteAfter deadline not passed — the check a pull gets), checks the
//! purpose lies within the agreement's, evaluates the agreement's policy again (scope
//! `use`, action `aggregate`, the declared purpose, and as the use count the queries it
//! answered plus the reads the consumer's usage notices reported), computes the query
//! over the product's rows on its own node ([`aggregate`]), and answers only the groups
//! of at least k rows, saying only that smaller groups may have been withheld (never how
//! many, nor how many rows matched: either would tell a filter that matched one person
//! from one that matched nobody). Mask duties of the same policy apply to the values
//! first. Both nodes log each query and the size of its answer, each filter value only
//! as a keyed hash ([`aggregate::Query::logged`]).
//!
//! A raw `Transfer.Pull` of such an agreement is refused ([`only_aggregates`]).
//!
//! A threshold on group size does not stop differencing (two queries whose groups
//! differ by one row). Agreements whose policy carries a `differentialPrivacy` duty
//! get noisy answers instead ([`dp`]), each query spending ε of the agreement's budget
//! ([`budget`]) durably before its answer leaves; a query beyond the budget is refused.
//! Without that duty, policies can bound the number of queries with a `count`
//! constraint.
//!
//! One count per agreement: a query and a read of the copy each spend one use (a pull
//! spends none: it delivers the copy, whose reads are the uses). The consumer's node
//! checks a query before it sends it when it knows more than the provider (its copy
//! was deleted, or read), with its reads and its answered queries as the count, and
//! counts each answer it receives; its reads count those answers too. The
//! provider counts the queries it answered and the reads reported to it, so a policy
//! that must hold against a consumer bypassing its own node asks for `notify`.

pub mod aggregate;
pub mod budget;
pub mod dp;

use liutong_policy::{
    Action, CompiledPolicy, Decision, Denial, Duty, Request, Scope, State as PolicyState,
};

use std::sync::Arc;

use crate::audit::log::{AuditError, AuditLog, EventKind};
use crate::base::error::{ErrorKind, ErrorKinded, PeerRefusal};
use crate::catalog::Catalog;
use crate::catalog::product::Format;
use crate::config::Limits;
use crate::contract::{
    AgreedProductError, Agreement, AgreementError, Contracts, Role, UsageGate, purpose_within,
};
use crate::desensitize;
use crate::identity::{MemberRole, Membership, NodeIdentity};
use crate::outbound::Peers;
use crate::pause;
use crate::storage::{Storage, StorageError};
use aggregate::{Aggregation, Answer, Filter, FilterOp, Function, Query};
use liutong_proto::v1 as pb;

/// How many queries each agreement has had answered: on the provider the ones it
/// answered, on the consumer the answers it received. With the copy's reads they make
/// the agreement's one use count.
const QUERIES: &str = "queries";
/// Separates the key of logged filter values from the agreement's masking key, so that
/// a logged hash never equals a masked value delivered to the consumer.
const LOG_KEY_LABEL: &[u8] = b"liutong query log filter values v1";

/// The queries answered under `agreement_id` that this node counted.
pub fn queries_so_far(storage: &dyn Storage, agreement_id: &str) -> Result<u64, StorageError> {
    Ok(storage
        .get(QUERIES, agreement_id.as_bytes())?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    #[error("no finalized agreement {0}")]
    UnknownAgreement(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the agreement's policy refuses the query: {0}")]
    Denied(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    TooLarge(String),
    /// The agreement's privacy budget cannot pay for the query.
    #[error("{0}")]
    BudgetSpent(String),
    #[error("{0}")]
    DataLoss(String),
    /// The agreed product version is no longer at the provider.
    #[error("{0}")]
    Gone(String),
    /// A store of this node cannot be read right now.
    #[error("{0}")]
    Unavailable(String),
    #[error("the provider: {0}")]
    Peer(PeerRefusal),
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit log cannot be written, so the query is refused: {0}")]
    Audit(String),
}

impl ErrorKinded for QueryError {
    fn kind(&self) -> ErrorKind {
        match self {
            QueryError::UnknownAgreement(_) => ErrorKind::NotFound,
            QueryError::Forbidden(_) | QueryError::Denied(_) => ErrorKind::PermissionDenied,
            QueryError::Invalid(_) => ErrorKind::InvalidArgument,
            QueryError::Unsupported(_) | QueryError::Gone(_) => ErrorKind::FailedPrecondition,
            QueryError::TooLarge(_) | QueryError::BudgetSpent(_) => ErrorKind::ResourceExhausted,
            QueryError::DataLoss(_) => ErrorKind::DataLoss,
            QueryError::Peer(refusal) => refusal.kind,
            QueryError::Unreachable(_)
            | QueryError::Unavailable(_)
            | QueryError::Storage(_)
            | QueryError::Audit(_) => ErrorKind::Unavailable,
        }
    }

    fn message(&self) -> String {
        match self {
            QueryError::Peer(refusal) => format!("the provider answered: {}", refusal.message),
            other => other.to_string(),
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            QueryError::Storage(s) => Some(s),
            _ => None,
        }
    }
}

impl From<AgreedProductError> for QueryError {
    fn from(e: AgreedProductError) -> Self {
        match e {
            AgreedProductError::Gone(why) => Self::Gone(why),
            AgreedProductError::Unreadable(_) => Self::Unavailable(e.to_string()),
            AgreedProductError::Damaged(_) | AgreedProductError::Changed => {
                Self::DataLoss(e.to_string())
            }
        }
    }
}

impl From<AuditError> for QueryError {
    fn from(e: AuditError) -> Self {
        Self::Audit(e.to_string())
    }
}

impl From<aggregate::AggregateError> for QueryError {
    fn from(e: aggregate::AggregateError) -> Self {
        match e {
            aggregate::AggregateError::Invalid(m) => QueryError::Invalid(m),
            aggregate::AggregateError::TooManyGroups => QueryError::TooLarge(e.to_string()),
            aggregate::AggregateError::Read(m) => QueryError::DataLoss(m),
        }
    }
}

impl From<AgreementError> for QueryError {
    fn from(e: AgreementError) -> Self {
        match e {
            AgreementError::Unknown(id) => Self::UnknownAgreement(id),
            AgreementError::NotConsumer { .. } => Self::Forbidden(e.to_string()),
            AgreementError::Damaged(why) => Self::DataLoss(why),
            AgreementError::Storage(s) => Self::Storage(s),
        }
    }
}

/// Reads a query from its message, naming the first malformed part.
pub fn query_from_proto(q: Option<&pb::AggregateQuery>) -> Result<Query, QueryError> {
    let q = q.ok_or_else(|| QueryError::Invalid("query: the query is missing".into()))?;
    let mut out = Query::default();
    for (i, a) in q.aggregations.iter().enumerate() {
        let function = match pb::AggregateFunction::try_from(a.function) {
            Ok(pb::AggregateFunction::Count) => Function::Count,
            Ok(pb::AggregateFunction::Sum) => Function::Sum,
            Ok(pb::AggregateFunction::Avg) => Function::Avg,
            Ok(pb::AggregateFunction::Min) => Function::Min,
            Ok(pb::AggregateFunction::Max) => Function::Max,
            _ => {
                return Err(QueryError::Invalid(format!(
                    "aggregations[{i}].function: one of count, sum, avg, min, max"
                )));
            }
        };
        let column = (!a.column.trim().is_empty()).then(|| a.column.clone());
        out.aggregations.push(Aggregation { function, column });
    }
    out.group_by = q.group_by.clone();
    for (i, f) in q.filters.iter().enumerate() {
        let op = match pb::FilterOperator::try_from(f.op) {
            Ok(pb::FilterOperator::Eq) => FilterOp::Eq,
            Ok(pb::FilterOperator::Lt) => FilterOp::Lt,
            Ok(pb::FilterOperator::Lteq) => FilterOp::Lteq,
            Ok(pb::FilterOperator::Gt) => FilterOp::Gt,
            Ok(pb::FilterOperator::Gteq) => FilterOp::Gteq,
            _ => {
                return Err(QueryError::Invalid(format!(
                    "filters[{i}].op: one of =, <, <=, >, >="
                )));
            }
        };
        if f.column.trim().is_empty() {
            return Err(QueryError::Invalid(format!(
                "filters[{i}].column: name a column"
            )));
        }
        out.filters.push(Filter {
            column: f.column.clone(),
            op,
            value: f.value.clone(),
        });
    }
    Ok(out)
}

/// The message of a query (the CLI builds one from its flags).
pub fn query_to_proto(q: &Query) -> pb::AggregateQuery {
    pb::AggregateQuery {
        aggregations: q
            .aggregations
            .iter()
            .map(|a| pb::Aggregation {
                function: match a.function {
                    Function::Count => pb::AggregateFunction::Count,
                    Function::Sum => pb::AggregateFunction::Sum,
                    Function::Avg => pb::AggregateFunction::Avg,
                    Function::Min => pb::AggregateFunction::Min,
                    Function::Max => pb::AggregateFunction::Max,
                } as i32,
                column: a.column.clone().unwrap_or_default(),
            })
            .collect(),
        group_by: q.group_by.clone(),
        filters: q
            .filters
            .iter()
            .map(|f| pb::Filter {
                column: f.column.clone(),
                op: match f.op {
                    FilterOp::Eq => pb::FilterOperator::Eq,
                    FilterOp::Lt => pb::FilterOperator::Lt,
                    FilterOp::Lteq => pb::FilterOperator::Lteq,
                    FilterOp::Gt => pb::FilterOperator::Gt,
                    FilterOp::Gteq => pb::FilterOperator::Gteq,
                } as i32,
                value: f.value.clone(),
            })
            .collect(),
    }
}

/// The minimum group size the duties ask for: the largest `aggregateOnly` k, or `None`
/// when no duty restricts use to aggregates.
pub fn aggregate_only(duties: &[Duty]) -> Option<u32> {
    duties
        .iter()
        .filter_map(|d| match d {
            Duty::AggregateOnly { k } => Some(*k),
            _ => None,
        })
        .max()
}

/// The largest minimum group size among the duties (1 when none asks for one).
pub fn min_group_size(duties: &[Duty]) -> u32 {
    aggregate_only(duties).unwrap_or(1)
}

/// Provider side, at transfer scope: `Some(reason)` when the agreement releases only
/// aggregates, so no row may be delivered — the transfer decision permits with an
/// `aggregateOnly` duty, or no permission covers `use` but one covers `aggregate`.
pub fn only_aggregates(
    policy: &CompiledPolicy,
    transfer: &Decision,
    request: &Request,
    state: &PolicyState,
    agreement_id: &str,
) -> Option<String> {
    let duties = if transfer.is_permit() {
        // Noise on answers would mean nothing if the rows themselves could be pulled.
        if aggregate_only(&transfer.duties).is_none() && dp::terms(&transfer.duties).is_none() {
            return None;
        }
        transfer.duties.clone()
    } else if transfer.denial == Some(Denial::NoPermission) {
        let aggregate = liutong_policy::evaluate(
            policy,
            &Request {
                scope: Scope::Use,
                action: Action::Aggregate,
                ..request.clone()
            },
            state,
        );
        if !aggregate.is_permit() {
            return None;
        }
        aggregate.duties
    } else {
        return None;
    };
    let what = match (aggregate_only(&duties), dp::terms(&duties)) {
        (_, Some(_)) => "differentially private aggregates".to_owned(),
        (k, None) => format!("aggregates over groups of at least {} rows", k.unwrap_or(1)),
    };
    Some(format!(
        "agreement {agreement_id} permits only {what} \
         (compute-to-data): its rows never leave the provider; send an aggregate query \
         instead (liutong query --agreement {agreement_id} …)"
    ))
}

/// Compute-to-data, both sides: the provider answers aggregate queries under its
/// agreements; the consumer sends them.
pub struct Queries {
    storage: Arc<dyn Storage>,
    audit: AuditLog,
    identity: Arc<NodeIdentity>,
    contracts: Arc<Contracts>,
    catalog: Arc<Catalog>,
    peers: Arc<Peers>,
    gate: Arc<dyn UsageGate>,
    limits: Limits,
}

impl Queries {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Arc<dyn Storage>,
        audit: AuditLog,
        identity: Arc<NodeIdentity>,
        contracts: Arc<Contracts>,
        catalog: Arc<Catalog>,
        peers: Arc<Peers>,
        gate: Arc<dyn UsageGate>,
        limits: Limits,
    ) -> Self {
        Self {
            storage,
            audit,
            identity,
            contracts,
            catalog,
            peers,
            gate,
            limits,
        }
    }
}

/// What the provider answers, with the product it was computed over.
pub struct Answered {
    pub agreement: Agreement,
    pub k: u32,
    pub query: Query,
    pub answer: Answer,
    /// What a differentially private answer spent, with its δ.
    pub privacy: Option<(budget::Spending, f64)>,
}

impl Queries {
    /// Provider side: answers a query under an agreement, for `purpose` (`None`: the
    /// agreement's own), see the module doc.
    pub async fn answer(
        &self,
        caller: &Membership,
        agreement_id: &str,
        purpose: Option<&str>,
        query: Query,
    ) -> Result<Answered, QueryError> {
        let agreement = self
            .contracts
            .consumer_agreement(&caller.participant_id, agreement_id)?;
        let policy = self
            .contracts
            .compiled_policy(&agreement)
            .map_err(|e| QueryError::Invalid(format!("the agreement's policy: {e}")))?;
        // Decision, answer and the raised count are one step per agreement, so concurrent
        // queries cannot both be decided on the same count.
        let lock = self.contracts.locks().lock_for(agreement_id);
        let _counted = lock.lock().await;
        let shown = self.logged(agreement_id, &query).await?;
        // The same gate as a pull's: revoked, copy deleted, or past its deadline.
        if let Err(why) = self.gate.delivery_allowed(&agreement) {
            self.refuse(&agreement, &shown, &why).await?;
            return Err(QueryError::Forbidden(why));
        }
        let purpose = purpose.unwrap_or(&agreement.purpose).to_owned();
        if let Err(why) = purpose_within(&policy, &purpose, &agreement) {
            self.refuse(&agreement, &shown, &why).await?;
            return Err(QueryError::Denied(why));
        }
        let queries = queries_so_far(self.storage.as_ref(), agreement_id)?;
        let uses = queries + self.gate.reads(agreement_id)?;
        let decision = liutong_policy::evaluate(
            &policy,
            &Request {
                purpose: Some(purpose.clone()),
                ..agreement.request(Scope::Use, Action::Aggregate, caller)
            },
            &agreement.policy_state(uses),
        );
        if !decision.is_permit() {
            let why = decision.explain();
            self.refuse(&agreement, &shown, &why).await?;
            return Err(QueryError::Denied(why));
        }
        let k = min_group_size(&decision.duties);
        // Under differential privacy: what the noise is and whether the budget pays for
        // it, both decided before anything is read.
        let private = match dp::terms(&decision.duties) {
            None => None,
            Some(terms) => {
                let plan = match dp::Plan::for_query(&query, &terms, k) {
                    Ok(p) => p,
                    Err(e) => {
                        self.refuse(&agreement, &shown, &e.to_string()).await?;
                        return Err(QueryError::Unsupported(e.to_string()));
                    }
                };
                let spent = budget::spent(self.storage.as_ref(), agreement_id)?;
                match budget::next(spent, terms.epsilon, terms.budget) {
                    Ok(spending) => Some((plan, spending)),
                    Err(why) => {
                        self.refuse(&agreement, &shown, &why).await?;
                        return Err(QueryError::BudgetSpent(why));
                    }
                }
            }
        };
        let product = agreement.product(&self.catalog.products)?;
        if product.format == Format::Bytes {
            return Err(QueryError::Unsupported(format!(
                "product {} is opaque bytes: aggregates need CSV or JSON Lines rows",
                product.product_id
            )));
        }
        let columns: Vec<String> = product
            .profile
            .as_ref()
            .map(|p| p.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let rules = desensitize::mask_rules(&decision.duties);
        let key = if rules.is_empty() {
            None
        } else {
            Some(
                desensitize::delivery::agreement_key(&self.storage, agreement_id)
                    .await
                    .map_err(|e| QueryError::DataLoss(e.to_string()))?,
            )
        };
        let products = self.catalog.products.clone();
        let computed = {
            let query = query.clone();
            let product = product.clone();
            let plan_dp = private.as_ref().map(|(plan, _)| plan.clone());
            tokio::task::spawn_blocking(move || -> Result<Answer, QueryError> {
                let plan = match &key {
                    Some(_) => Some(
                        desensitize::delivery::plan_for(&products, &product, rules)
                            .map_err(|e| QueryError::DataLoss(e.to_string()))?,
                    ),
                    None => None,
                };
                query.check(&columns, plan.as_ref())?;
                let masking = plan.as_ref().zip(key.as_ref());
                let data = products.reader(&product);
                let Some(noise) = plan_dp else {
                    return Ok(match product.format {
                        Format::Csv => aggregate::run_csv(&query, k, masking, data)?,
                        _ => aggregate::run_jsonl(&query, k, masking, data)?,
                    });
                };
                // Every group, with clamped sums; the noise decides what is shown.
                let clamps = noise.clamps();
                let engine = dp::Plan::engine_query(&query);
                let exact = match product.format {
                    Format::Csv => aggregate::run_csv_clamped(&engine, 1, masking, &clamps, data)?,
                    _ => aggregate::run_jsonl_clamped(&engine, 1, masking, &clamps, data)?,
                };
                noise
                    .release(&query, exact)
                    .map_err(|e| QueryError::Unavailable(e.to_string()))
            })
            .await
            .map_err(|e| QueryError::DataLoss(format!("the query task failed: {e}")))?
        };
        let answer = match computed {
            Ok(a) => a,
            Err(e) => {
                agreement
                    .log(
                        &self.audit,
                        self.identity.participant_id(),
                        EventKind::Query,
                        format!("aggregate query not answered ({shown}): {e}"),
                    )
                    .await?;
                return Err(e);
            }
        };
        self.storage
            .put_durable(
                QUERIES,
                agreement_id.as_bytes(),
                &(queries + 1).to_be_bytes(),
            )
            .await?;
        let answered = format!(
            "aggregate query answered ({shown}): {} groups of at least k = {k} rows returned{}; \
             {} rows read",
            answer.groups.len(),
            withheld_text(answer.may_be_withheld),
            answer.rows_read
        );
        let privacy = match private {
            None => {
                agreement
                    .log(
                        &self.audit,
                        self.identity.participant_id(),
                        EventKind::Query,
                        answered,
                    )
                    .await?;
                None
            }
            Some((plan, spending)) => {
                // The entry and the spent budget are one durable group: once the answer
                // can leave, both are on disk.
                let event = agreement.event(
                    EventKind::Query,
                    agreement
                        .other_party(self.identity.participant_id())
                        .as_str(),
                    format!("{answered}; {}", privacy_text(&spending, plan.delta())),
                );
                self.audit
                    .append_with(
                        &[event],
                        vec![budget::spend_record(agreement_id, &spending)],
                    )
                    .await?;
                // Pause point `query-budget-spent`: the budget of a differentially
                // private answer is spent and logged, the answer not yet sent.
                pause::at("query-budget-spent").await;
                Some((spending, plan.delta()))
            }
        };
        Ok(Answered {
            agreement,
            k,
            query,
            answer,
            privacy,
        })
    }

    /// The query as this node's audit log keeps it ([`Query::logged`]), under a key
    /// derived from the node secret for this agreement alone.
    async fn logged(&self, agreement_id: &str, query: &Query) -> Result<String, QueryError> {
        let agreement_key = desensitize::delivery::agreement_key(&self.storage, agreement_id)
            .await
            .map_err(|e| QueryError::Unavailable(format!("the node secret: {e}")))?;
        let derived = ring::hmac::sign(&agreement_key, LOG_KEY_LABEL);
        Ok(query.logged(&ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            derived.as_ref(),
        )))
    }

    /// Logs a query refused before it was computed; `shown` is the query as the log
    /// keeps it.
    async fn refuse(
        &self,
        agreement: &Agreement,
        shown: &str,
        why: &str,
    ) -> Result<(), QueryError> {
        agreement
            .log(
                &self.audit,
                self.identity.participant_id(),
                EventKind::Query,
                format!("aggregate query refused ({shown}): {why}"),
            )
            .await?;
        Ok(())
    }
}

/// The answer as the peer API sends it.
pub fn answer_to_proto(a: &Answered) -> pb::AggregateResponse {
    pb::AggregateResponse {
        agreement_id: a.agreement.agreement_id.clone(),
        product_id: a.agreement.product_id.clone(),
        version: a.agreement.version,
        k: a.k,
        group_by: a.query.group_by.clone(),
        aggregations: a
            .query
            .aggregations
            .iter()
            .map(ToString::to_string)
            .collect(),
        groups: a
            .answer
            .groups
            .iter()
            .map(|g| pb::AggregateGroup {
                keys: g.keys.clone(),
                rows: g.rows,
                values: g
                    .values
                    .iter()
                    .map(|v| pb::AggregateValue { value: *v })
                    .collect(),
            })
            .collect(),
        groups_may_be_withheld: a.answer.may_be_withheld,
        differential_privacy: a.privacy.map(|(s, delta)| pb::DifferentialPrivacy {
            epsilon: budget::value(s.epsilon),
            epsilon_spent: budget::value(s.spent),
            epsilon_left: budget::value(s.left()),
            budget: budget::value(s.budget),
            delta,
        }),
    }
}

/// How the logs say what a differentially private answer spent.
fn privacy_text(s: &budget::Spending, delta: f64) -> String {
    let delta = if delta > 0.0 {
        format!(", δ = {delta:e}")
    } else {
        String::new()
    };
    format!(
        "differential privacy: ε = {} spent{delta}, {} of {} spent in all, {} left",
        budget::text(s.epsilon),
        budget::text(s.spent),
        budget::text(s.budget),
        budget::text(s.left())
    )
}

/// How the logs say whether groups may have been withheld.
fn withheld_text(may_be: bool) -> &'static str {
    if may_be {
        ", smaller groups may be withheld"
    } else {
        ""
    }
}

impl Queries {
    /// Consumer side: sends a query under an agreement this node holds as consumer, to
    /// `peer` or the address the agreement was negotiated with, and logs it with the size
    /// of the answer.
    pub async fn send(
        &self,
        agreement_id: &str,
        peer: &str,
        purpose: Option<&str>,
        query: Option<&pb::AggregateQuery>,
    ) -> Result<pb::AggregateResponse, QueryError> {
        self.contracts
            .require_own_role(MemberRole::Consumer, "sending an aggregate query")
            .map_err(|e| QueryError::Forbidden(e.to_string()))?;
        let parsed = query_from_proto(query)?;
        let shown = self.logged(agreement_id, &parsed).await?;
        let n = self.contracts.finalized(Role::Consumer, agreement_id)?;
        let agreement: Agreement = n
            .agreement_content()
            .ok_or_else(|| QueryError::Invalid("the agreement is unreadable".into()))?;
        self.contracts
            .require_peer_role(
                &agreement.provider,
                MemberRole::Provider,
                "answering a query",
            )
            .map_err(|e| QueryError::Forbidden(e.to_string()))?;
        // This node holds the agreement's other uses (the copy's reads) and knows of its
        // copy's deletion, so it checks the use before it asks; the provider checks again
        // with what it knows. Decision, query and count are one step per agreement, as a
        // read's are.
        let lock = self.contracts.locks().lock_for(agreement_id);
        let _counted = lock.lock().await;
        let purpose = purpose.unwrap_or(&agreement.purpose).to_owned();
        if let Err(why) = self.use_allowed(&agreement, &purpose) {
            self.refuse(&agreement, &shown, &why).await?;
            return Err(QueryError::Forbidden(why));
        }
        let address = if peer.trim().is_empty() {
            n.peer_address.clone()
        } else {
            peer.to_owned()
        };
        let channel = self
            .peers
            .connect_member(&address, &agreement.provider)
            .await
            .map_err(|e| QueryError::Unreachable(e.to_string()))?;
        let limit = self.limits.max_message_bytes;
        let result = pb::query_client::QueryClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
            .aggregate(pb::AggregateRequest {
                agreement_id: agreement_id.to_owned(),
                query: Some(query_to_proto(&parsed)),
                purpose: purpose.clone(),
            })
            .await;
        if result.is_ok() {
            let queries = queries_so_far(self.storage.as_ref(), agreement_id)?;
            self.storage
                .put_durable(
                    QUERIES,
                    agreement_id.as_bytes(),
                    &(queries + 1).to_be_bytes(),
                )
                .await?;
        }
        let detail = match &result {
            Ok(r) => {
                let r = r.get_ref();
                let privacy = r.differential_privacy.as_ref().map_or(String::new(), |p| {
                    format!(
                        "; differential privacy: ε = {} spent, {} of {} spent in all, {} left",
                        p.epsilon, p.epsilon_spent, p.budget, p.epsilon_left
                    )
                });
                format!(
                    "aggregate query sent ({shown}): {} groups of at least k = {} rows received{}{privacy}",
                    r.groups.len(),
                    r.k,
                    withheld_text(r.groups_may_be_withheld)
                )
            }
            Err(s) => format!(
                "aggregate query sent ({shown}): refused, {:?}: {}",
                s.code(),
                s.message()
            ),
        };
        agreement
            .log(
                &self.audit,
                self.identity.participant_id(),
                EventKind::Query,
                detail,
            )
            .await?;
        result
            .map(tonic::Response::into_inner)
            .map_err(|s| QueryError::Peer(s.into()))
    }
}

impl Queries {
    /// Consumer side: whether this node may use `agreement` for a query for `purpose`,
    /// with what only it may know: its copy not deleted by usage control, and, once the
    /// copy was read, the purpose within the agreement's and the policy at use scope
    /// with its reads and answered queries as the use count. The error says why.
    fn use_allowed(&self, agreement: &Agreement, purpose: &str) -> Result<(), String> {
        let id = agreement.agreement_id.as_str();
        let unreadable = |e: StorageError| format!("cannot check the agreement's uses: {e}");
        if let Some(gone) = self.gate.deleted(id).map_err(unreadable)? {
            return Err(gone);
        }
        // Without reads the provider knows every use, and decides (and logs) alone.
        let reads = self.gate.reads(id).map_err(unreadable)?;
        if reads == 0 {
            return Ok(());
        }
        let policy = self
            .contracts
            .compiled_policy(agreement)
            .map_err(|e| format!("the agreement's policy: {e}"))?;
        purpose_within(&policy, purpose, agreement)?;
        let uses = queries_so_far(self.storage.as_ref(), id).map_err(unreadable)? + reads;
        let decision = liutong_policy::evaluate(
            &policy,
            &Request {
                purpose: Some(purpose.to_owned()),
                ..agreement.request(Scope::Use, Action::Aggregate, &self.identity.membership)
            },
            &agreement.policy_state(uses),
        );
        if decision.is_permit() {
            Ok(())
        } else {
            Err(format!(
                "the agreement's policy refuses this query: {}",
                decision.explain()
            ))
        }
    }
}
