# The shard map and ownership models, moved from the scaling app: the scaling app's
# migrations made their tables (and herd_next_id on every shard), so this changes only
# Django's state.

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("scaling", "0003_shard_models_to_sharding"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ShardOwnership",
                    fields=[
                        ("logical_shard", models.PositiveSmallIntegerField(primary_key=True, serialize=False)),
                        ("owned", models.BooleanField(default=False)),
                    ],
                    options={"db_table": "scaling_shardownership"},
                ),
                migrations.CreateModel(
                    name="ShardPlacement",
                    fields=[
                        ("logical_shard", models.PositiveSmallIntegerField(primary_key=True, serialize=False)),
                        ("database", models.CharField(max_length=64)),
                        ("version", models.BigIntegerField(db_index=True, default=0)),
                        ("moved_at", models.DateTimeField(blank=True, null=True)),
                    ],
                    options={"db_table": "scaling_shardplacement"},
                ),
            ],
        ),
    ]
