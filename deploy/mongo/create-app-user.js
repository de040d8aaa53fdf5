// Runs once, when the data volume is new: droneflow's own user may read and write its database,
// and read the replica set's configuration, nothing else; the root user stays with the operator.
// The configuration tells the store whether one member votes, where `{w: 1, j: true}` is what
// `w: "majority"` means and costs mongod less (deploy/OPERATIONS.md, write concern).
const admin = db.getSiblingDB("admin");
admin.createRole({
  role: "droneflowReadReplicaSetConfig",
  privileges: [{ resource: { cluster: true }, actions: ["replSetGetConfig"] }],
  roles: [],
});
admin.createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [
    { role: "readWrite", db: "droneflow" },
    { role: "droneflowReadReplicaSetConfig", db: "admin" },
  ],
});
