# Deployment to AWS (docs/deploy.md).
#
#   make package STAGE=dev     build/dev/: the stack's template and code, checked by cfn-lint; no AWS account needed
#   make deploy STAGE=dev DEPLOY_BUCKET=my-artifacts [PARAMETERS="FeedBridgeImage=... AlarmEmail=..."]
#
# STAGE is a stage of .chalice/config.json other than local (dev, prod). The
# template is `chalice package`'s output merged with build/<stage>/merge-template.json,
# which infra/build_template.py makes from infra/resources.yaml,
# infra/operations.yaml, infra/event_sources.json and the stage's config.

STAGE ?= dev
STACK_NAME ?= brokerage-orders-$(STAGE)
# An S3 bucket in REGION for the code and the template (`aws cloudformation package`).
DEPLOY_BUCKET ?=
# Extra parameter overrides, Key=Value separated by spaces (docs/deploy.md lists them;
# WebSocketApi=disabled where API Gateway v2 does not exist, e.g. LocalStack community).
PARAMETERS ?=
REGION ?= $(or $(AWS_REGION),$(AWS_DEFAULT_REGION),us-east-1)
AWS ?= aws

PACKAGE_DIR := build/$(STAGE)
MERGE_TEMPLATE := $(PACKAGE_DIR)/merge-template.json
STAGE_PARAMETERS := $(PACKAGE_DIR)/parameters.txt
SAM_TEMPLATE := $(PACKAGE_DIR)/package/sam.json
PACKAGED_TEMPLATE := $(PACKAGE_DIR)/packaged.yaml

.PHONY: package deploy deploy-check

# chalice package only reads the region (it writes ${AWS::Region} into the
# template); it needs no credentials. Its first run per requirements.txt
# downloads Linux wheels for the Lambda runtime; later runs reuse
# .chalice/deployments/.
# cfn-lint 1.x checks a SAM template against SAM's schema only, so the
# template the SAM transform makes of it (what CloudFormation creates) is
# expanded offline and linted too; the serverless rules run on the SAM
# template, which they are written for.
package: setup
	$(BIN)/python infra/build_template.py --stage $(STAGE) --out $(MERGE_TEMPLATE) --parameters-out $(STAGE_PARAMETERS)
	AWS_DEFAULT_REGION=$(REGION) $(BIN)/chalice package --stage $(STAGE) \
		--merge-template $(MERGE_TEMPLATE) $(PACKAGE_DIR)/package
	$(BIN)/python infra/expand_template.py $(SAM_TEMPLATE) --out $(PACKAGE_DIR)/expanded.json --region $(REGION)
	$(BIN)/cfn-lint -- $(SAM_TEMPLATE) $(PACKAGE_DIR)/expanded.json
	$(BIN)/cfn-lint --config-file infra/cfn-lint-serverless.yaml -- $(SAM_TEMPLATE)
	@echo "packaged: $(SAM_TEMPLATE) (+ deployment.zip; checked as expanded: $(PACKAGE_DIR)/expanded.json)"

# Everything deploy needs that package does not, checked before anything is built.
deploy-check:
	@test -n "$(DEPLOY_BUCKET)" || { echo "deploy: set DEPLOY_BUCKET to an S3 bucket in $(REGION) for the packaged code, e.g. make deploy STAGE=$(STAGE) DEPLOY_BUCKET=my-artifacts" >&2; exit 2; }
	@command -v $(AWS) >/dev/null || { echo "deploy: the AWS CLI ($(AWS)) is not installed (https://aws.amazon.com/cli/)" >&2; exit 2; }
	@$(AWS) sts get-caller-identity --region $(REGION) >/dev/null 2>&1 || { echo "deploy: no usable AWS credentials (aws sts get-caller-identity failed): set AWS_PROFILE or log in (aws sso login) first" >&2; exit 2; }

# The stage's own parameter values (ResourcePrefix, PlacementMaxAttempts, ...)
# are always passed: `aws cloudformation deploy` would otherwise keep an
# existing stack's previous values and ignore a changed .chalice/config.json.
# PARAMETERS come after them, so they win. CAPABILITY_NAMED_IAM: the roles
# have names (${ResourcePrefix}-<function>, -operator, -feed-bridge-task),
# which the data key's policy names as its only users.
deploy: deploy-check
	$(MAKE) --no-print-directory package STAGE=$(STAGE) REGION=$(REGION)
	$(AWS) cloudformation package --region $(REGION) \
		--template-file $(SAM_TEMPLATE) \
		--s3-bucket $(DEPLOY_BUCKET) --s3-prefix $(STACK_NAME) \
		--output-template-file $(PACKAGED_TEMPLATE)
	$(AWS) cloudformation deploy --region $(REGION) \
		--template-file $(PACKAGED_TEMPLATE) --stack-name $(STACK_NAME) \
		--s3-bucket $(DEPLOY_BUCKET) --s3-prefix $(STACK_NAME) \
		--capabilities CAPABILITY_NAMED_IAM CAPABILITY_AUTO_EXPAND \
		--no-fail-on-empty-changeset \
		--parameter-overrides $$(cat $(STAGE_PARAMETERS)) $(PARAMETERS)
	@$(AWS) cloudformation describe-stacks --region $(REGION) --stack-name $(STACK_NAME) \
		--query "Stacks[0].Outputs[?OutputKey=='EndpointURL' || OutputKey=='StreamUrl'].[OutputKey,OutputValue]" --output text
