using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>Precision, recall, F1 and support of one class.</summary>
/// <param name="Class">Class index.</param>
/// <param name="Name">Class name.</param>
/// <param name="Precision">TP / (TP + FP); 0 when the class is never predicted.</param>
/// <param name="Recall">TP / (TP + FN); 0 when the class never occurs.</param>
/// <param name="F1">2PR / (P + R); 0 when both are 0.</param>
/// <param name="Support">Number of examples whose label is this class.</param>
public sealed record ClassScores(int Class, string Name, double Precision, double Recall, double F1, int Support);

/// <summary>
/// Classification metrics for the retrieve-or-generate decision (or any single-label classifier): macro-averaged and
/// per-class precision, recall and F1 as scikit-learn computes them (zero_division = 0), plus accuracy.
/// GILL's decision classes in the released code are <c>0 = gen</c>, <c>1 = ret</c>.
/// </summary>
public sealed class ClassificationMetrics
{
    internal ClassificationMetrics(IReadOnlyList<ClassScores> perClass, int[,] confusion, double accuracy, int n, ConfidenceInterval? f1Interval, bool[] correct)
    {
        PerClass = perClass.ToArray();
        MacroPrecision = perClass.Average(c => c.Precision);
        MacroRecall = perClass.Average(c => c.Recall);
        MacroF1 = perClass.Average(c => c.F1);
        Accuracy = accuracy;
        N = n;
        _confusion = (int[,])confusion.Clone();
        ConfidenceInterval = f1Interval;
        Correct = correct.ToArray();
    }

    private readonly int[,] _confusion;

    /// <summary>Macro F1 (the headline value).</summary>
    public double Value => MacroF1;

    /// <summary>Unweighted mean of the per-class F1.</summary>
    public double MacroF1 { get; }

    /// <summary>Unweighted mean of the per-class precision.</summary>
    public double MacroPrecision { get; }

    /// <summary>Unweighted mean of the per-class recall.</summary>
    public double MacroRecall { get; }

    /// <summary>Share of correct predictions.</summary>
    public double Accuracy { get; }

    /// <summary>Number of examples.</summary>
    public int N { get; }

    /// <summary>Per-class scores.</summary>
    public IReadOnlyList<ClassScores> PerClass { get; }

    /// <summary>Per example, whether the prediction equals the label.</summary>
    public IReadOnlyList<bool> Correct { get; }

    /// <summary>Bootstrap interval of the macro F1 (null when off).</summary>
    public ConfidenceInterval? ConfidenceInterval { get; }

    /// <summary>Confusion count: examples with label <paramref name="label"/> predicted as <paramref name="predicted"/>.</summary>
    public int Confusion(int label, int predicted) => _confusion[label, predicted];

    /// <summary>Per-class rows: class, name, precision, recall, F1, support.</summary>
    public DataFrame ToDataFrame() => new(
        new Int32DataFrameColumn("Class", PerClass.Select(c => c.Class)),
        new StringDataFrameColumn("Name", PerClass.Select(c => c.Name)),
        new DoubleDataFrameColumn("Precision", PerClass.Select(c => c.Precision)),
        new DoubleDataFrameColumn("Recall", PerClass.Select(c => c.Recall)),
        new DoubleDataFrameColumn("F1", PerClass.Select(c => c.F1)),
        new Int32DataFrameColumn("Support", PerClass.Select(c => c.Support)));

    /// <summary>Summary rows: macro F1, macro precision, macro recall, accuracy.</summary>
    public DataFrame ToSummaryDataFrame() => MetricFrames.Summary(new (string, double, int, double?, ConfidenceInterval?)[]
    {
        ("MacroF1", MacroF1, N, null, ConfidenceInterval),
        ("MacroPrecision", MacroPrecision, N, null, null),
        ("MacroRecall", MacroRecall, N, null, null),
        ("Accuracy", Accuracy, N, null, null),
    });

    /// <inheritdoc />
    public override string ToString() => $"macro F1 = {MacroF1:G4}, P = {MacroPrecision:G4}, R = {MacroRecall:G4}, accuracy = {Accuracy:G4} (N = {N})";
}

internal static class ClassificationEvaluator
{
    public static ClassificationMetrics Evaluate(IReadOnlyList<int> labels, IReadOnlyList<int> predictions, IReadOnlyList<string>? classNames, BootstrapOptions options)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(predictions);
        options.Validate();
        if (labels.Count == 0) throw new ArgumentException("Classification metrics need at least one example; the labels are empty.", nameof(labels));
        if (labels.Count != predictions.Count)
            throw new ArgumentException($"There are {labels.Count} labels but {predictions.Count} predictions.", nameof(predictions));
        int k;
        if (classNames is not null)
        {
            if (classNames.Count < 2) throw new ArgumentException("Give at least two class names.", nameof(classNames));
            k = classNames.Count;
        }
        else k = Math.Max(2, Math.Max(labels.Max(), predictions.Max()) + 1);
        for (int i = 0; i < labels.Count; i++)
        {
            if (labels[i] < 0 || labels[i] >= k) throw new ArgumentOutOfRangeException(nameof(labels), labels[i], $"Label {i} is {labels[i]}, outside classes 0…{k - 1}.");
            if (predictions[i] < 0 || predictions[i] >= k) throw new ArgumentOutOfRangeException(nameof(predictions), predictions[i], $"Prediction {i} is {predictions[i]}, outside classes 0…{k - 1}.");
        }
        // Classes that occur neither as a label nor as a prediction are left out of the macro average (scikit-learn's
        // default label set), unless class names were given.
        var classes = classNames is not null
            ? Enumerable.Range(0, k).ToArray()
            : labels.Concat(predictions).Distinct().OrderBy(c => c).ToArray();
        var names = classNames ?? Enumerable.Range(0, k).Select(i => i.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray();

        var full = Compute(labels, predictions, k, classes, names, Enumerable.Range(0, labels.Count).ToArray());
        var ci = Bootstrap.Interval(labels.Count, idx => Compute(labels, predictions, k, classes, names, idx).PerClass.Average(c => c.F1), options);
        var correct = labels.Select((l, i) => l == predictions[i]).ToArray();
        return new ClassificationMetrics(full.PerClass, full.Confusion, correct.Count(c => c) / (double)labels.Count, labels.Count, ci, correct);
    }

    private static (List<ClassScores> PerClass, int[,] Confusion) Compute(IReadOnlyList<int> labels, IReadOnlyList<int> predictions, int k, int[] classes, IReadOnlyList<string> names, int[] idx)
    {
        var conf = new int[k, k];
        foreach (var i in idx) conf[labels[i], predictions[i]]++;
        var per = new List<ClassScores>();
        foreach (var c in classes)
        {
            int tp = conf[c, c], fp = 0, fn = 0;
            for (int j = 0; j < k; j++)
            {
                if (j == c) continue;
                fp += conf[j, c];
                fn += conf[c, j];
            }
            double p = tp + fp == 0 ? 0 : tp / (double)(tp + fp);
            double r = tp + fn == 0 ? 0 : tp / (double)(tp + fn);
            double f = p + r == 0 ? 0 : 2 * p * r / (p + r);
            per.Add(new ClassScores(c, names[c], p, r, f, tp + fn));
        }
        return (per, conf);
    }
}
