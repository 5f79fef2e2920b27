using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Modules;

/// <summary>Options of the decision classifier's training loop (the original notebook's recipe by default).</summary>
public sealed class GillDecisionTrainingOptions
{
    /// <summary>AdamW learning rate.</summary>
    public double LearningRate { get; set; } = 1e-3;

    /// <summary>AdamW weight decay.</summary>
    public double WeightDecay { get; set; }

    /// <summary>AdamW epsilon.</summary>
    public double Epsilon { get; set; } = 1e-8;

    /// <summary>Number of full-batch steps.</summary>
    public int Steps { get; set; } = 2000;

    /// <summary>Seed of the torch generator used for initialisation-independent randomness (dropout).</summary>
    public long Seed { get; set; } = 1337;

    internal void Validate()
    {
        if (!(LearningRate > 0)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "Must be positive.");
        if (WeightDecay < 0) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "Must be non-negative.");
        if (!(Epsilon > 0)) throw new ArgumentOutOfRangeException(nameof(Epsilon), Epsilon, "Must be positive.");
        if (Steps <= 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "Must be positive.");
    }
}

/// <summary>Macro-F1 and accuracy of a decision classifier on labelled rows.</summary>
public sealed record GillDecisionMetrics(int Count, double Accuracy, double MacroF1);

/// <summary>
/// GILL's retrieve-or-generate classifier over the [IMG0] hidden state, in the released variant (Dropout 0.5 +
/// Linear(D, 2), CE, argmax; loads <c>decision_model.pth.tar</c> converted to safetensors, keys <c>1.weight</c>,
/// <c>1.bias</c>) or the paper's (linear on [h ; max cosine score], one logit, BCE). Labels: 0 = generate, 1 = retrieve.
/// </summary>
public sealed class GillDecisionClassifier : IDisposable
{
    private readonly nn.Module<Tensor, Tensor> _module;

    /// <summary>Creates a freshly initialised classifier for D = <paramref name="hiddenDim"/>.</summary>
    public GillDecisionClassifier(GillDecisionKind kind, int hiddenDim, long? seed = null)
    {
        if (hiddenDim <= 0) throw new ArgumentOutOfRangeException(nameof(hiddenDim), hiddenDim, "Must be positive.");
        Kind = kind;
        HiddenDim = hiddenDim;
        _module = GlobalRandom.Maybe(seed, () => kind switch
        {
            GillDecisionKind.Released => (nn.Module<Tensor, Tensor>)new ReleasedDecisionClassifier(hiddenDim),
            GillDecisionKind.PaperWithMaxScore => new PaperDecisionClassifier(hiddenDim),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
        }, restore: true);
        foreach (var p in _module.parameters()) p.DetachFromDisposeScope();
        _module.eval();
    }

    /// <summary>The variant.</summary>
    public GillDecisionKind Kind { get; }

    /// <summary>D: width of the [IMG0] hidden state.</summary>
    public int HiddenDim { get; }

    /// <summary>Device of the weights.</summary>
    public Device Device => _module.parameters().First().device;

    /// <summary>Moves the weights to <paramref name="device"/>.</summary>
    public GillDecisionClassifier To(Device device)
    {
        _module.to(device);
        return this;
    }

    /// <summary>
    /// Raw outputs in eval mode: logits [B, 2] (released) or one logit per row [B] (paper; needs
    /// <paramref name="maxScores"/> [B], the maximum cosine similarity of each row's retrieval embedding).
    /// </summary>
    public Tensor Logits(Tensor imgHidden, Tensor? maxScores = null)
    {
        _module.eval();
        return _module.forward(Features(imgHidden, maxScores));
    }

    /// <summary>Decisions in eval mode: 1 = retrieve, 0 = generate, per row (int64 [B]).</summary>
    public Tensor Decide(Tensor imgHidden, Tensor? maxScores = null)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        return DecisionLosses.Predict(Kind, Logits(imgHidden, maxScores)).MoveToOuterDisposeScope();
    }

    /// <summary>Probability of "retrieve" per row in eval mode ([B]).</summary>
    public Tensor RetrieveProbability(Tensor imgHidden, Tensor? maxScores = null)
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        var o = Logits(imgHidden, maxScores);
        var p = Kind == GillDecisionKind.Released ? o.softmax(-1).select(1, 1) : o.sigmoid();
        return p.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Full-batch training (the released notebook's loop: AdamW, lr 1e-3, wd 0, 2000 steps). Returns the loss of each step.
    /// </summary>
    /// <param name="imgHidden">[N, D] [IMG0] hidden states.</param>
    /// <param name="labels">[N] int64 labels, 0 = generate, 1 = retrieve.</param>
    /// <param name="maxScores">[N] max cosine scores (paper variant only).</param>
    /// <param name="options">Training options; defaults when null.</param>
    /// <param name="cancellationToken">Stops between steps.</param>
    public IReadOnlyList<double> Train(Tensor imgHidden, Tensor labels, Tensor? maxScores = null,
        GillDecisionTrainingOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GillDecisionTrainingOptions();
        options.Validate();
        if (labels.dim() != 1 || labels.shape[0] != imgHidden.shape[0])
            throw new ArgumentException($"Decision labels must be [{imgHidden.shape[0]}], got {SafeTensors.FormatShape(labels.shape)}.");
        var history = new List<double>(options.Steps);
        var device = Device;
        torch.random.manual_seed(options.Seed);
        using var optimizer = torch.optim.AdamW(_module.parameters(), options.LearningRate, 0.9, 0.999, options.Epsilon, options.WeightDecay);
        using (var prep = torch.NewDisposeScope())
        {
            var x = Features(imgHidden, maxScores).to(device).detach().DetachFromDisposeScope();
            var y = labels.to(device).to(ScalarType.Int64).DetachFromDisposeScope();
            try
            {
                long bad = ((y < 0) | (y > 1)).sum().item<long>();
                if (bad > 0) throw new ArgumentException($"Decision labels must be 0 (generate) or 1 (retrieve); {bad} row(s) are not.");
                _module.train();
                for (int step = 0; step < options.Steps; step++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    using var scope = torch.NewDisposeScope();
                    optimizer.zero_grad();
                    var loss = DecisionLosses.Loss(Kind, _module.forward(x), y);
                    loss.backward();
                    optimizer.step();
                    history.Add(loss.item<float>());
                }
            }
            finally
            {
                _module.eval();
                x.Dispose();
                y.Dispose();
            }
        }
        return history;
    }

    /// <summary>Accuracy and macro-F1 (over the two classes) in eval mode.</summary>
    public GillDecisionMetrics Evaluate(Tensor imgHidden, Tensor labels, Tensor? maxScores = null)
    {
        using var scope = torch.NewDisposeScope();
        var pred = Decide(imgHidden, maxScores).cpu().data<long>().ToArray();
        var gold = labels.cpu().to(ScalarType.Int64).data<long>().ToArray();
        if (pred.Length != gold.Length) throw new ArgumentException($"Got {gold.Length} labels for {pred.Length} rows.");
        double f1Sum = 0;
        for (long c = 0; c <= 1; c++)
        {
            int tp = 0, fp = 0, fn = 0;
            for (int i = 0; i < pred.Length; i++)
            {
                if (pred[i] == c && gold[i] == c) tp++;
                else if (pred[i] == c) fp++;
                else if (gold[i] == c) fn++;
            }
            f1Sum += tp == 0 ? 0 : 2.0 * tp / (2.0 * tp + fp + fn);
        }
        int correct = pred.Zip(gold).Count(p => p.First == p.Second);
        return new GillDecisionMetrics(pred.Length, pred.Length == 0 ? 0 : (double)correct / pred.Length, f1Sum / 2);
    }

    /// <summary>
    /// Maximum cosine similarity of each (unnormalised) retrieval embedding [B, p] against candidate embeddings [N, p]
    /// (the paper classifier's extra feature).
    /// </summary>
    public static Tensor MaxCosineScores(Tensor retrievalEmbeddings, Tensor candidates)
    {
        using var scope = torch.NewDisposeScope();
        var a = retrievalEmbeddings / retrievalEmbeddings.norm(-1, keepdim: true);
        var b = candidates / candidates.norm(-1, keepdim: true);
        return torch.matmul(a, b.t()).max(-1).values.MoveToOuterDisposeScope();
    }

    /// <summary>Writes the weights (released variant: <c>1.weight</c>, <c>1.bias</c>) to a safetensors file atomically.</summary>
    public void Save(string path) =>
        SafeTensors.Save(path, _module.state_dict().Select(kv => new KeyValuePair<string, Tensor>(kv.Key, kv.Value)),
            new Dictionary<string, string> { ["format"] = "pt", ["gill_decision_kind"] = Kind.ToString() });

    /// <summary>Loads weights strictly (e.g. the released <c>decision_model.pth.tar</c> converted to safetensors).</summary>
    public void Load(string path)
    {
        using var ck = SafeTensorsCheckpoint.Open(path);
        WeightLoader.Load(_module, ck, k => k);
    }

    /// <inheritdoc />
    public void Dispose() => _module.Dispose();

    private Tensor Features(Tensor imgHidden, Tensor? maxScores)
    {
        if (imgHidden.dim() != 2 || imgHidden.shape[1] != HiddenDim)
            throw new ArgumentException($"Decision input must be the [IMG0] hidden state [B, {HiddenDim}], got {SafeTensors.FormatShape(imgHidden.shape)}.");
        var h = imgHidden.to(ScalarType.Float32).to(Device);
        if (Kind == GillDecisionKind.Released)
        {
            if (maxScores is not null) throw new ArgumentException("The released decision classifier takes no max-score feature.");
            return h;
        }
        if (maxScores is null || maxScores.dim() != 1 || maxScores.shape[0] != h.shape[0])
            throw new ArgumentException($"The paper decision classifier needs max cosine scores [{h.shape[0]}].");
        return torch.cat(new[] { h, maxScores.to(ScalarType.Float32).to(Device).unsqueeze(-1) }, 1);
    }
}
