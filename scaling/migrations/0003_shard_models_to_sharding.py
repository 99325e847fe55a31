# The shard map and ownership models moved to the sharding app (scaling.sharding); their
# tables stay where they are, so this changes only Django's state.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("scaling", "0002_shardownership_shardplacement"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="ShardOwnership"),
                migrations.DeleteModel(name="ShardPlacement"),
            ],
        ),
    ]
