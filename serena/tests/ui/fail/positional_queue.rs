use serena::consumer;

#[consumer("orders")]
async fn handle() {}

fn main() {}
