//! One method from a client, dispatched: the small ones answered here, the rest handed to
//! `declare` and `deliver`.

use bytes::Bytes;
use serena_proto::method::{basic, channel, confirm, exchange, queue};
use serena_proto::{BasicProperties, Method};

use super::{Core, Fail, code, precondition, send};
use crate::queue::Destination;

impl Core {
    pub(super) fn handle_method(
        &mut self,
        id: u64,
        ch: u16,
        method: Method,
        content: Option<(BasicProperties, Bytes)>,
        now: u64,
    ) -> Result<(), Fail> {
        match method {
            Method::ChannelClose(_) => {
                self.cleanup_channel(id, ch);
                let conn = self.conns.get_mut(&id).expect("connection");
                conn.channels.remove(&ch);
                send(conn, ch, channel::CloseOk::default());
            }
            Method::ChannelOpen(_) => {
                return Err(Fail::Connection(
                    code::CHANNEL_ERROR,
                    "CHANNEL_ERROR - second 'channel.open' seen".to_owned(),
                ));
            }
            Method::ChannelFlow(flow) => {
                if !flow.active {
                    return Err(Fail::Connection(
                        code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - active=false".to_owned(),
                    ));
                }
                self.reply(id, ch, false, channel::FlowOk { active: true });
            }
            Method::ExchangeDeclare(m) => self.exchange_declare(id, ch, m)?,
            Method::ExchangeDelete(m) => {
                let name = m.exchange.as_str();
                if let Some(x) = self.exchanges.get(name) {
                    if m.if_unused && !x.bindings.is_empty() {
                        return Err(precondition(format!(
                            "exchange '{name}' in vhost '/' in use"
                        )));
                    }
                    if name.is_empty() || name.starts_with("amq.") {
                        return Err(Fail::Channel(
                            code::ACCESS_REFUSED,
                            format!(
                                "ACCESS_REFUSED - operation not permitted on the default exchange or 'amq.*' exchange '{name}'"
                            ),
                        ));
                    }
                }
                self.delete_exchange(name);
                self.reply(id, ch, m.nowait, exchange::DeleteOk::default());
            }
            Method::ExchangeBind(m) => {
                self.bind(
                    m.source.as_str(),
                    Destination::Exchange(m.destination.as_str().to_owned()),
                    m.routing_key.as_str(),
                    m.arguments,
                )?;
                self.reply(id, ch, m.nowait, exchange::BindOk::default());
            }
            Method::ExchangeUnbind(m) => {
                self.unbind(
                    m.source.as_str(),
                    Destination::Exchange(m.destination.as_str().to_owned()),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                self.reply(id, ch, m.nowait, exchange::UnbindOk::default());
            }
            Method::QueueDeclare(m) => self.queue_declare(id, ch, m)?,
            Method::QueueBind(m) => {
                self.check_queue_access(id, m.queue.as_str())?;
                self.bind(
                    m.exchange.as_str(),
                    Destination::Queue(m.queue.as_str().to_owned()),
                    m.routing_key.as_str(),
                    m.arguments,
                )?;
                self.reply(id, ch, m.nowait, queue::BindOk::default());
            }
            Method::QueueUnbind(m) => {
                self.check_queue_access(id, m.queue.as_str())?;
                self.unbind(
                    m.exchange.as_str(),
                    Destination::Queue(m.queue.as_str().to_owned()),
                    m.routing_key.as_str(),
                    &m.arguments,
                )?;
                self.reply(id, ch, false, queue::UnbindOk::default());
            }
            Method::QueuePurge(m) => {
                self.check_queue_access(id, m.queue.as_str())?;
                let q = self.queues.get_mut(m.queue.as_str()).expect("checked");
                let message_count = u32::try_from(q.messages.len()).unwrap_or(u32::MAX);
                q.messages.clear();
                self.reply(id, ch, m.nowait, queue::PurgeOk { message_count });
            }
            Method::QueueDelete(m) => {
                let name = m.queue.as_str();
                let message_count = match self.queues.get(name) {
                    None => 0,
                    Some(_) => {
                        self.check_queue_access(id, name)?;
                        let q = &self.queues[name];
                        if m.if_unused && !q.consumers.is_empty() {
                            return Err(precondition(format!(
                                "queue '{name}' in vhost '/' in use"
                            )));
                        }
                        if m.if_empty && !q.messages.is_empty() {
                            return Err(precondition(format!(
                                "queue '{name}' in vhost '/' not empty"
                            )));
                        }
                        self.delete_queue(name)
                    }
                };
                self.reply(id, ch, m.nowait, queue::DeleteOk { message_count });
            }
            Method::BasicQos(m) => {
                if m.prefetch_size != 0 {
                    return Err(Fail::Channel(
                        code::NOT_IMPLEMENTED,
                        format!("NOT_IMPLEMENTED - prefetch_size!=0 ({})", m.prefetch_size),
                    ));
                }
                let chan = self.chan(id, ch);
                if m.global {
                    chan.global_prefetch = m.prefetch_count;
                } else {
                    chan.prefetch = m.prefetch_count;
                }
                self.reply(id, ch, false, basic::QosOk::default());
            }
            Method::BasicConsume(m) => self.consume(id, ch, m)?,
            Method::BasicCancel(m) => {
                let tag = m.consumer_tag.as_str().to_owned();
                if let Some(c) = self.chan(id, ch).consumers.remove(&tag) {
                    self.remove_consumer(&c.queue, id, ch, &tag);
                }
                self.reply(
                    id,
                    ch,
                    m.nowait,
                    basic::CancelOk {
                        consumer_tag: tag.as_str().into(),
                    },
                );
            }
            Method::BasicPublish(m) => {
                let (properties, body) = content.expect("basic.publish carries content");
                self.publish(id, ch, m, properties, body, now)?;
            }
            Method::BasicGet(m) => self.get(id, ch, m)?,
            Method::BasicAck(m) => {
                let tags = self.take_unacked(id, ch, m.delivery_tag, m.multiple)?;
                self.stats.acked += tags.len() as u64;
            }
            Method::BasicNack(m) => {
                let tags = self.take_unacked(id, ch, m.delivery_tag, m.multiple)?;
                self.stats.nacked += tags.len() as u64;
                self.settle_negative(tags, m.requeue, now);
            }
            Method::BasicReject(m) => {
                let tags = self.take_unacked(id, ch, m.delivery_tag, false)?;
                self.stats.nacked += tags.len() as u64;
                self.settle_negative(tags, m.requeue, now);
            }
            Method::BasicRecover(m) => {
                if !m.requeue {
                    return Err(Fail::Connection(
                        code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - requeue=false".to_owned(),
                    ));
                }
                let chan = self.chan(id, ch);
                let unacked = std::mem::take(&mut chan.unacked);
                for c in chan.consumers.values_mut() {
                    c.inflight = 0;
                }
                for (_, u) in unacked.into_iter().rev() {
                    self.requeue(&u.queue, u.message);
                }
                self.reply(id, ch, false, basic::RecoverOk::default());
            }
            Method::ConfirmSelect(m) => {
                self.chan(id, ch).confirm = true;
                self.reply(id, ch, m.nowait, confirm::SelectOk::default());
            }
            Method::TxSelect(_) | Method::TxCommit(_) | Method::TxRollback(_) => {
                return Err(Fail::Channel(
                    code::NOT_IMPLEMENTED,
                    "NOT_IMPLEMENTED - transactions are not supported by the in-memory broker"
                        .to_owned(),
                ));
            }
            other => {
                return Err(Fail::Connection(
                    code::COMMAND_INVALID,
                    format!(
                        "COMMAND_INVALID - unexpected {} from a client",
                        other.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}
