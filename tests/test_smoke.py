from rnnexp.training import train


def test_default_config_trains_on_bundled_subset(make_cfg):
    record = train(make_cfg())
    assert record["status"] == "completed"
