using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

namespace Gill.ML.MLNet;

/// <summary>The kind of value a Gill stage reads from or writes to a column.</summary>
public enum GillColumnKind
{
    /// <summary>A fixed-size <see cref="float"/> vector (<c>VBuffer&lt;float&gt;</c>), possibly multi-dimensional.</summary>
    FloatVector,
    /// <summary>A <see cref="float"/> scalar.</summary>
    Float,
    /// <summary>A <see cref="bool"/> scalar.</summary>
    Boolean,
    /// <summary>Text (<c>ReadOnlyMemory&lt;char&gt;</c>).</summary>
    Text,
    /// <summary>A 1-based key (<see cref="uint"/>) with optional value names (output only).</summary>
    Key,
    /// <summary>An image (input only): an <c>MLImage</c> column or a text column holding an image file path.</summary>
    Image,
}

/// <summary>
/// Describes one column a Gill stage reads or writes: its name, kind and, for vectors, its dimensions
/// (e.g. <c>[77, 768]</c>).
/// </summary>
public sealed class GillColumn
{
    private GillColumn(string name, GillColumnKind kind, int[] dimensions, string[]? keyNames, int keyCount)
    {
        if (string.IsNullOrWhiteSpace(name)) throw new ArgumentException("A column name must not be empty.", nameof(name));
        Name = name;
        Kind = kind;
        Dimensions = dimensions;
        KeyNames = keyNames;
        KeyCount = keyCount;
    }

    /// <summary>Column name.</summary>
    public string Name { get; }

    /// <summary>Value kind.</summary>
    public GillColumnKind Kind { get; }

    /// <summary>Vector dimensions (empty for scalars; for an input vector of any length, empty as well).</summary>
    public IReadOnlyList<int> Dimensions { get; }

    /// <summary>Number of elements of one vector value (product of <see cref="Dimensions"/>; 1 for scalars; 0 = any length).</summary>
    public int Size => Kind == GillColumnKind.FloatVector ? (Dimensions.Count == 0 ? 0 : Dimensions.Aggregate(1, (a, b) => checked(a * b))) : 1;

    /// <summary>Names of the key values (for <see cref="GillColumnKind.Key"/> outputs), or null.</summary>
    public IReadOnlyList<string>? KeyNames { get; }

    /// <summary>Number of key values (for <see cref="GillColumnKind.Key"/>).</summary>
    public int KeyCount { get; }

    /// <summary>A float vector of the given dimensions (for inputs, no dimensions accepts any fixed length).</summary>
    public static GillColumn FloatVector(string name, params int[] dimensions)
    {
        foreach (var d in dimensions)
            if (d <= 0) throw new ArgumentOutOfRangeException(nameof(dimensions), $"Column '{name}': vector dimensions must be positive, got [{string.Join(", ", dimensions)}].");
        return new(name, GillColumnKind.FloatVector, dimensions.ToArray(), null, 0);
    }

    /// <summary>A float scalar.</summary>
    public static GillColumn Float(string name) => new(name, GillColumnKind.Float, Array.Empty<int>(), null, 0);

    /// <summary>A boolean scalar.</summary>
    public static GillColumn Boolean(string name) => new(name, GillColumnKind.Boolean, Array.Empty<int>(), null, 0);

    /// <summary>A text scalar.</summary>
    public static GillColumn Text(string name) => new(name, GillColumnKind.Text, Array.Empty<int>(), null, 0);

    /// <summary>An image input: <c>MLImage</c> or a text path to an image file.</summary>
    public static GillColumn Image(string name) => new(name, GillColumnKind.Image, Array.Empty<int>(), null, 0);

    /// <summary>A key output with the given value names (key <c>k</c> is 1-based: 1 means <c>names[0]</c>).</summary>
    public static GillColumn Key(string name, params string[] valueNames)
    {
        if (valueNames.Length == 0) throw new ArgumentException($"Key column '{name}' needs at least one value name.", nameof(valueNames));
        return new(name, GillColumnKind.Key, Array.Empty<int>(), valueNames.ToArray(), valueNames.Length);
    }

    /// <summary>The ML.NET type of this column as an output.</summary>
    public DataViewType ToDataViewType() => Kind switch
    {
        GillColumnKind.FloatVector when Size > 0 => new VectorDataViewType(NumberDataViewType.Single, Dimensions.ToArray()),
        GillColumnKind.FloatVector => throw new InvalidOperationException($"Output column '{Name}' needs fixed vector dimensions."),
        GillColumnKind.Float => NumberDataViewType.Single,
        GillColumnKind.Boolean => BooleanDataViewType.Instance,
        GillColumnKind.Text => TextDataViewType.Instance,
        GillColumnKind.Key => new KeyDataViewType(typeof(uint), KeyCount),
        _ => throw new InvalidOperationException($"Column '{Name}' of kind {Kind} cannot be an output column."),
    };

    /// <summary>Human-readable expected type, for error messages.</summary>
    public string Describe() => Kind switch
    {
        GillColumnKind.FloatVector when Size > 0 => $"Vector<Single, {string.Join(", ", Dimensions)}>",
        GillColumnKind.FloatVector => "a fixed-size Vector<Single>",
        GillColumnKind.Float => "Single",
        GillColumnKind.Boolean => "Boolean",
        GillColumnKind.Text => "String",
        GillColumnKind.Key => $"Key<UInt32, 0-{KeyCount - 1}>",
        GillColumnKind.Image => "Image (MLImage) or String (image file path)",
        _ => Kind.ToString(),
    };

    /// <summary>Formats an ML.NET type for messages, including vector dimensions.</summary>
    internal static string DescribeType(DataViewType type) => type switch
    {
        VectorDataViewType v when v.IsKnownSize => $"Vector<{v.ItemType}, {string.Join(", ", v.Dimensions)}>",
        VectorDataViewType v => $"Vector<{v.ItemType}> of variable length",
        ImageDataViewType => "Image",
        _ => type.ToString() ?? type.GetType().Name,
    };

    /// <inheritdoc />
    public override string ToString() => $"{Name}: {Describe()}";
}
