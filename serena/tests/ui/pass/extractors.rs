// Every extractor as a handler argument, alone and all together.

use bytes::Bytes;
use serena::worker::{Handler, Headers, Json, Properties, Publisher, State};
use serena::{Delivery, consumer};

#[derive(serde::Deserialize)]
struct Order {
    id: u64,
}

#[derive(Clone)]
struct App {
    name: String,
}

#[consumer(queue = "deliveries")]
async fn with_delivery(delivery: Delivery) {
    let _ = delivery.delivery_tag;
}

#[consumer(queue = "bytes")]
async fn with_bytes(body: Bytes) {
    let _ = body.len();
}

#[consumer(queue = "json")]
async fn with_json(order: Json<Order>) {
    let _ = order.0.id;
}

#[consumer(queue = "headers")]
async fn with_headers(headers: Headers) {
    let _ = headers.0.len();
}

#[consumer(queue = "properties")]
async fn with_properties(properties: Properties) {
    let _ = properties.0.content_type;
}

#[consumer(queue = "state")]
async fn with_state(state: State<App>) {
    let _ = state.0.name;
}

#[consumer(queue = "publisher")]
async fn with_publisher(publisher: Publisher) {
    let _ = publisher.publish_json("", "elsewhere", &1).await;
}

#[consumer(queue = "everything")]
async fn with_everything(
    delivery: Delivery,
    body: Bytes,
    order: Json<Order>,
    headers: Headers,
    properties: Properties,
    state: State<App>,
    publisher: Publisher,
) {
    let _ = (delivery, body, order, headers, properties, state, publisher);
}

#[consumer(queue = "nothing")]
async fn with_nothing() {}

fn assert_handler<H: Handler + Copy + Default + std::fmt::Debug>(h: H) -> String {
    h.spec().name.into_owned()
}

fn main() {
    let names = [
        assert_handler(with_delivery),
        assert_handler(with_bytes),
        assert_handler(with_json),
        assert_handler(with_headers),
        assert_handler(with_properties),
        assert_handler(with_state),
        assert_handler(with_publisher),
        assert_handler(with_everything),
        assert_handler(with_nothing),
    ];
    assert_eq!(
        names,
        [
            "with_delivery",
            "with_bytes",
            "with_json",
            "with_headers",
            "with_properties",
            "with_state",
            "with_publisher",
            "with_everything",
            "with_nothing",
        ]
    );
}
