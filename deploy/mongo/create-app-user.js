// Runs once, when the data volume is new: droneflow's own user may read and write its database
// and nothing else; the root user stays with the operator.
db.getSiblingDB("admin").createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [{ role: "readWrite", db: "droneflow" }],
});
